package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// host is what the workers of one server address share: whether the
// address is known to be unreachable, which worker probes it meanwhile,
// the channel that wakes the others when it answers again, and the cap on
// logins in progress.
type host struct {
	key string
	sem chan struct{} // one token per login in progress

	// Guarded by Engine.hostMu.
	members map[*worker]struct{}
	down    bool          // a transport failure was seen since the last login
	prober  *worker       // while down, the worker that retries at ProbeInterval
	wake    chan struct{} // closed (and replaced) when the address answers again
	solo    bool          // no sharing: the worker backs off alone (benchmarks)
}

// maxWakeSpread bounds the random delay after which a worker woken by a
// recovery reconnects; the spread is wakeSpreadPer per worker of the
// address up to this, so a handful reconnect at once and a thousand over
// two seconds.
const (
	maxWakeSpread = 2 * time.Second
	wakeSpreadPer = 2 * time.Millisecond
)

// joinHost returns the shared state of w's server address, making it on
// first use.
func (e *Engine) joinHost(w *worker) *host {
	key := strings.ToLower(w.cfg.Addr)
	if e.solo {
		key = "\x00" + w.cfg.Mailbox
	}
	e.hostMu.Lock()
	defer e.hostMu.Unlock()
	h := e.hosts[key]
	if h == nil {
		h = &host{key: key, sem: make(chan struct{}, e.opts.MaxDials), members: make(map[*worker]struct{}), wake: make(chan struct{}), solo: e.solo}
		e.hosts[key] = h
	}
	h.members[w] = struct{}{}
	return h
}

// leaveHost removes a stopped worker. A prober that leaves while the
// address is down hands the role to another worker, which it wakes.
func (e *Engine) leaveHost(w *worker) {
	h := w.h
	e.hostMu.Lock()
	defer e.hostMu.Unlock()
	delete(h.members, w)
	if len(h.members) == 0 {
		delete(e.hosts, h.key)
		return
	}
	if h.prober == w {
		h.prober = nil
		if h.down {
			for m := range h.members {
				h.prober = m
				m.handoff()
				break
			}
		}
	}
}

// reached records that w logged in at its address. When the address was
// down, every worker of it sleeping in backoff is woken to reconnect now.
func (e *Engine) reached(w *worker) {
	h := w.h
	e.hostMu.Lock()
	defer e.hostMu.Unlock()
	if h.down {
		h.down = false
		h.prober = nil
		close(h.wake)
		h.wake = make(chan struct{})
	}
}

// failed records a failed attempt of w. transport says the address itself
// did not answer (connection refused or lost, no greeting); then w becomes
// the address's prober unless another worker is. It returns the channel
// that is closed when the address answers again, and whether w probes.
func (e *Engine) failed(w *worker, transport bool) (wake <-chan struct{}, probe bool) {
	h := w.h
	e.hostMu.Lock()
	defer e.hostMu.Unlock()
	if h.solo {
		return nil, false
	}
	if transport {
		h.down = true
		if h.prober == nil {
			h.prober = w
		}
	} else if h.prober == w {
		// The server answered this worker (a refused login, a NO): it is
		// not down for want of a network, so nothing to probe for.
		h.prober = nil
	}
	return h.wake, h.prober == w
}

// wakeSpread is how long at most a woken worker waits before it
// reconnects, so the workers of one address do not all dial in the same
// millisecond.
func (e *Engine) wakeSpread(w *worker) time.Duration {
	e.hostMu.Lock()
	n := len(w.h.members)
	e.hostMu.Unlock()
	return min(maxWakeSpread, time.Duration(n)*wakeSpreadPer)
}

// transportError tells whether a failure to log in means the address did
// not answer, as opposed to a server that answered and refused (an IMAP
// NO or BAD, a certificate that does not verify, TLS spoken to a port that
// does not): only the former is worth probing for and waking others on.
func transportError(err error) bool {
	var (
		ie  *imap.Error
		cve *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		hn  x509.HostnameError
		ci  x509.CertificateInvalidError
		ae  tls.AlertError
		rh  tls.RecordHeaderError
		st  *errStartTLS
	)
	return err != nil && !errors.Is(err, ErrServerFault) && !errors.Is(err, errAuthRefused) && !errors.As(err, &st) && !errors.As(err, &ie) && !errors.As(err, &cve) && !errors.As(err, &ua) &&
		!errors.As(err, &hn) && !errors.As(err, &ci) && !errors.As(err, &ae) && !errors.As(err, &rh)
}
