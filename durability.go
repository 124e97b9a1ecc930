package um

import (
	"context"
	"sync"
)

// Durability lets a write return before its change is durable, so that a
// caller with more work queued (an IMAP client's pipelined commands) goes
// on with it while the store makes the change durable in the background,
// and waits once, before it tells anyone the work is done.
//
// A Store that finds a Durability in a write's context (WithDurability) may
// return as soon as the change is applied: visible to every reader and kept
// if the process is killed. It then hands the Durability the wait for the
// rest: the change surviving a power loss too. A Store that does not know
// Durability ignores it and returns once the change is durable, as always,
// so a caller never needs to know which kind it has.
//
// The caller must call Wait before it acknowledges the change outside the
// process (an IMAP tagged OK, a reply to a phone). When Wait fails, the
// change may be lost at a power loss: the caller must not acknowledge it
// and should drop the connection instead, as a crash would.
//
// The zero Durability is ready to use. Its methods may be called from any
// goroutine.
type Durability struct {
	mu    sync.Mutex
	waits []func(context.Context) error
}

// Defer adds the wait for one write's durability. Stores call it.
func (d *Durability) Defer(wait func(context.Context) error) {
	d.mu.Lock()
	d.waits = append(d.waits, wait)
	d.mu.Unlock()
}

// Pending reports whether a write is still waited for.
func (d *Durability) Pending() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.waits) > 0
}

// Wait waits until every write deferred so far is durable, and returns the
// first error. The waits are done with once called, whatever the outcome.
func (d *Durability) Wait(ctx context.Context) error {
	d.mu.Lock()
	waits := d.waits
	d.waits = nil
	d.mu.Unlock()
	var first error
	for _, w := range waits {
		if err := w(ctx); err != nil && first == nil {
			first = err
		}
	}
	return first
}

type durabilityKey struct{}

// WithDurability returns a context whose writes may leave their durability
// to d (see Durability).
func WithDurability(ctx context.Context, d *Durability) context.Context {
	return context.WithValue(ctx, durabilityKey{}, d)
}

// DurabilityFrom returns the Durability of ctx, or nil. A Store that can
// apply a change before it is durable calls it on each write.
func DurabilityFrom(ctx context.Context) *Durability {
	d, _ := ctx.Value(durabilityKey{}).(*Durability)
	return d
}
