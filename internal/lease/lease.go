// Package lease runs a mailbox's outward work (syncing upstream, forwarding
// by e-mail) on one node at a time, through the store's um.Leaser.
//
// A Keeper tries to take the lease of one mailbox and purpose, renews it
// while it holds it, and runs the work only while it holds it. The work's
// context is cancelled before the store could let another node take the
// lease over: renewals that keep failing (a node cut from its database)
// stop the work a margin before the lease's time to live runs out, by this
// node's clock, which starts counting before the store's does. Writes of the
// work's state are fenced by the store as well (um.OutwardState.PutState
// checks the Epoch), so a node that was paused past its lease cannot
// overwrite its successor's state.
package lease

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/embeddedum/um"
)

// Options configure a Keeper.
type Options struct {
	// Leaser is the store's lease interface. When nil, the Keeper runs the
	// work at once and holds a lease of its own making (Epoch 0), for
	// stores that serve one process only.
	Leaser  um.Leaser
	Mailbox string
	Purpose string
	Node    string
	// TTL is the lease's time to live: how long another node waits, at
	// most, after this one died before it takes the work over. Default 15 s.
	TTL time.Duration
	// Retry is how often a node that does not hold the lease asks for it,
	// jittered by up to a quarter. Default TTL/3.
	Retry time.Duration
	// Logger gets the lease's changes of hands at Info and store faults
	// at Warn. Nil means slog.Default().
	Logger *slog.Logger
}

// Keeper holds one mailbox's lease of one purpose and runs the work while it
// does. Its methods are safe for concurrent use.
type Keeper struct {
	o Options

	mu      sync.Mutex
	seen    um.Lease // the last lease seen: this node's, or the holder's
	holding bool
	err     error // the last store fault, nil after a success
}

// New returns a Keeper for o, with its defaults filled in.
func New(o Options) *Keeper {
	if o.TTL <= 0 {
		o.TTL = 15 * time.Second
	}
	if o.Retry <= 0 {
		o.Retry = o.TTL / 3
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Keeper{o: o}
}

// Held is the lease the work runs under. Renewals move its Expires, never
// its Epoch.
type Held struct {
	mu sync.Mutex
	l  um.Lease
}

// Lease returns the lease as last renewed, to fence writes of the work's
// state with (um.OutwardState.PutState).
func (h *Held) Lease() um.Lease {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.l
}

func (h *Held) set(l um.Lease) {
	h.mu.Lock()
	h.l = l
	h.mu.Unlock()
}

// Owner tells who holds the lease as this node last saw it: the holder's
// node name (empty when nobody was seen holding it), its Epoch, and whether
// it is this node that holds it now.
func (k *Keeper) Owner() (holder string, epoch uint64, mine bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.seen.Holder, k.seen.Epoch, k.holding
}

// Err returns the last error the store gave when asked for the lease, or
// nil when the last request succeeded or found another holder.
func (k *Keeper) Err() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.err
}

func (k *Keeper) note(l um.Lease, holding bool, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l.Holder != "" {
		k.seen = l
	}
	k.holding, k.err = holding, err
}

// Run takes the lease when it can and runs work while this node holds it,
// until ctx is done; then it stops the work, releases the lease so another
// node can take over at once, and returns ctx's error. Each time the node
// gains the lease, work is called with a context that is cancelled when the
// lease is lost or ctx is done, and with the lease it holds. Work that
// returns while the lease is still held is called again after Retry.
func (k *Keeper) Run(ctx context.Context, work func(context.Context, *Held)) error {
	if k.o.Leaser == nil {
		h := &Held{l: um.Lease{Mailbox: k.o.Mailbox, Purpose: k.o.Purpose, Holder: k.o.Node}}
		k.note(h.l, true, nil)
		k.repeat(ctx, work, h)
		k.note(um.Lease{}, false, nil)
		return ctx.Err()
	}
	for {
		start := time.Now()
		l, err := k.acquire(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			k.o.Logger.Info("lease taken", "mailbox", k.o.Mailbox, "purpose", k.o.Purpose, "node", k.o.Node, "epoch", l.Epoch)
			if done := k.hold(ctx, l, start, work); done {
				return ctx.Err()
			}
			continue
		}
		if err := sleep(ctx, k.retryAfter(l, err)); err != nil {
			return err
		}
	}
}

// retryAfter is how long to wait before asking again for a lease that
// acquire did not grant with err: Retry, jittered, or less when the lease
// another node holds expires sooner, so that a dead holder's work is taken
// over as soon as its lease runs out. The expiry is the store's time, read
// by this node's clock: a node whose clock is off asks once too early, or
// later but never after Retry.
func (k *Keeper) retryAfter(held um.Lease, err error) time.Duration {
	d := jitter(k.o.Retry)
	if errors.Is(err, um.ErrLeaseHeld) && !held.Expires.IsZero() {
		if until := time.Until(held.Expires); until > 0 && until < d {
			d = until + time.Millisecond + time.Duration(rand.Int64N(int64(k.o.TTL)/50+1))
		}
	}
	return d
}

// acquire asks for the lease once, within a deadline, and records what it
// learned.
func (k *Keeper) acquire(ctx context.Context) (um.Lease, error) {
	actx, cancel := context.WithTimeout(ctx, k.o.TTL/3)
	defer cancel()
	l, err := k.o.Leaser.AcquireLease(actx, k.o.Mailbox, k.o.Purpose, k.o.Node, k.o.TTL)
	switch {
	case err == nil:
		k.note(l, true, nil)
	case errors.Is(err, um.ErrLeaseHeld):
		k.note(l, false, nil)
	default:
		if ctx.Err() == nil {
			k.o.Logger.Warn("lease request failed", "mailbox", k.o.Mailbox, "purpose", k.o.Purpose, "node", k.o.Node, "err", err)
		}
		k.note(um.Lease{}, false, err)
	}
	return l, err
}

// hold runs work under l, renewing it, until the lease is lost (it returns
// false) or ctx is done (it releases the lease and returns true). start is
// when the request that granted l was sent: the store's clock started the
// lease's time to live no earlier.
func (k *Keeper) hold(ctx context.Context, l um.Lease, start time.Time, work func(context.Context, *Held)) bool {
	// The work stops this margin before the lease could pass to another
	// node, leaving it time to end what it does.
	margin := k.o.TTL / 5
	stopBy := start.Add(k.o.TTL - margin)
	h := &Held{l: l}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		k.repeat(wctx, work, h)
	}()
	stop := func() {
		cancel()
		<-done
	}
	renew := time.NewTimer(k.o.TTL / 3)
	defer renew.Stop()
	for {
		expiry := time.NewTimer(time.Until(stopBy))
		select {
		case <-ctx.Done():
			expiry.Stop()
			stop()
			rctx, rcancel := context.WithTimeout(context.Background(), k.o.TTL/3)
			if err := k.o.Leaser.ReleaseLease(rctx, h.Lease()); err != nil {
				k.o.Logger.Warn("lease release failed", "mailbox", k.o.Mailbox, "purpose", k.o.Purpose, "node", k.o.Node, "err", err)
			}
			rcancel()
			k.note(um.Lease{}, false, nil)
			return true
		case <-expiry.C:
			stop()
			k.o.Logger.Warn("lease lost: not renewed in time", "mailbox", k.o.Mailbox, "purpose", k.o.Purpose, "node", k.o.Node, "epoch", l.Epoch)
			k.note(um.Lease{}, false, k.Err())
			return false
		case <-renew.C:
			expiry.Stop()
			sent := time.Now()
			nl, err := k.acquire(ctx)
			if ctx.Err() != nil {
				continue // the next round releases
			}
			if err == nil && nl.Epoch == l.Epoch {
				h.set(nl)
				stopBy = sent.Add(k.o.TTL - margin)
				renew.Reset(k.o.TTL / 3)
				continue
			}
			if err == nil || errors.Is(err, um.ErrLeaseHeld) {
				// Another node holds it, or it lapsed and this node took it
				// anew: either way the work under the old Epoch ends.
				stop()
				k.o.Logger.Info("lease lost", "mailbox", k.o.Mailbox, "purpose", k.o.Purpose, "node", k.o.Node, "epoch", l.Epoch, "holder", nl.Holder)
				if err == nil {
					k.note(nl, false, nil) // the next Run round starts work under the new Epoch
				}
				return false
			}
			// A store fault: try again soon, until stopBy.
			renew.Reset(min(k.o.TTL/10, time.Second))
		}
	}
}

// repeat calls work until ctx is done, waiting Retry between calls.
func (k *Keeper) repeat(ctx context.Context, work func(context.Context, *Held), h *Held) {
	for ctx.Err() == nil {
		work(ctx, h)
		if sleep(ctx, k.o.Retry) != nil {
			return
		}
	}
}

func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/4+1))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
