// Package acceptwait keeps a server taking connections through a shortage of
// descriptors. When clients (or the host) hold every descriptor the
// process may open, accept fails with EMFILE until some connection ends;
// a server that returns from its accept loop on any error then stops
// taking connections for good, though the shortage passes.
package acceptwait

import (
	"errors"
	"syscall"
	"time"
)

// Backoff is the wait between accepts that fail for want of resources: 5
// ms, doubled on each failure in a row, at most a second. Its zero value
// is ready.
type Backoff struct{ wait time.Duration }

// Next returns how long to wait before accepting again after err, and
// false when err is no shortage that ending connections relieve (the
// listener closed, or broken), which ends the loop.
func (b *Backoff) Next(err error) (time.Duration, bool) {
	if !errors.Is(err, syscall.EMFILE) && !errors.Is(err, syscall.ENFILE) &&
		!errors.Is(err, syscall.ENOBUFS) && !errors.Is(err, syscall.ENOMEM) {
		return 0, false
	}
	b.wait = min(max(2*b.wait, 5*time.Millisecond), time.Second)
	return b.wait, true
}

// Reset starts the waits over, after an accept that succeeded.
func (b *Backoff) Reset() { b.wait = 0 }
