package sipmwi

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/embeddedum/um/internal/acceptwait"
	"github.com/embeddedum/um/internal/netpeer"
	"github.com/emiago/sipgo/sip"
)

// tcpConns holds the TCP connections a Server accepted, over all its
// listeners: it counts them per source IP address and in total, and each
// is a tcpConn with the limits a hostile peer needs.
//
// sipgo's own TransportTCP has ReadTimeout and WriteTimeout, but they are
// not used: its write deadline is the socket's, which every new write on
// the connection pushes forward, so a peer that keeps sending requests
// keeps a blocked write blocked; a write that does time out leaves the
// connection open and read; and a TransportTCP of our own would log
// through sipgo's process-wide logger instead of the quiet one.
type tcpConns struct {
	// Set once, in New.
	perPeer, total int
	pending        int // requests in flight per connection
	idle, write    time.Duration
	keep           func(remote string) bool // the connection carries a subscription

	mu       sync.Mutex
	peers    map[string]int
	n        int
	byRemote map[string]*tcpConn
}

// limitListener accepts through its tcpConns; a connection over a limit is
// closed at once and the next one accepted.
type limitListener struct {
	net.Listener
	conns *tcpConns
}

func (l *limitListener) Accept() (net.Conn, error) {
	// sipgo stops serving the listener on the first error Accept returns,
	// so a shortage of descriptors is waited out here (internal/acceptwait).
	var b acceptwait.Backoff
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			wait, ok := b.Next(err)
			if !ok {
				return nil, err
			}
			time.Sleep(wait)
			continue
		}
		b.Reset()
		if tc := l.conns.admit(c); tc != nil {
			return tc, nil
		}
		c.Close()
	}
}

// admit counts c in and wraps it, or returns nil when a limit is reached.
func (t *tcpConns) admit(c net.Conn) *tcpConn {
	remote := c.RemoteAddr().String()
	peer := netpeer.Key(c.RemoteAddr())
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n >= t.total || t.peers[peer] >= t.perPeer {
		return nil
	}
	tc := &tcpConn{Conn: c, write: t.write, idle: t.idle,
		keep:     func() bool { return t.keep(remote) },
		answered: make(chan struct{}, 1), done: make(chan struct{})}
	tc.release = func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.n--
		if t.peers[peer]--; t.peers[peer] <= 0 {
			delete(t.peers, peer)
		}
		if t.byRemote[remote] == tc {
			delete(t.byRemote, remote)
		}
	}
	t.n++
	t.peers[peer]++
	t.byRemote[remote] = tc
	return tc
}

// open reports whether the connection accepted from remote (an ip:port)
// is still open.
func (t *tcpConns) open(remote string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byRemote[remote] != nil
}

// onMessage runs on the goroutine that reads a connection, for each
// message read, after sipgo started the goroutine that handles it. That
// goroutine lives until its answer is written, and sipgo reads on without
// waiting for it: a peer that sends requests faster than they are
// answered (it does not read the answers, or they wait on a slow store)
// would have them pile up. So once pending requests of one connection
// wait for their final answers, nothing more is read from it until one is
// written; a connection held there for idle is closed.
func (t *tcpConns) onMessage(msg sip.Message) {
	req, ok := msg.(*sip.Request)
	if !ok || req.IsAck() || req.Transport() != "TCP" {
		return
	}
	t.mu.Lock()
	c := t.byRemote[req.Source()]
	t.mu.Unlock()
	if c == nil {
		return // a connection sipgo dialed, not one accepted here
	}
	c.mu.Lock()
	c.inFlight++
	c.mu.Unlock()
	var stuck *time.Timer
	for {
		c.mu.Lock()
		n := c.inFlight
		c.mu.Unlock()
		if n < t.pending {
			return
		}
		if stuck == nil {
			stuck = time.NewTimer(t.idle)
			defer stuck.Stop()
		}
		select {
		case <-c.answered:
		case <-c.done:
			return
		case <-stuck.C:
			c.Close()
			return
		}
	}
}

// tcpConn is one accepted connection. A write that takes longer than
// write closes it, which ends every goroutine waiting on it, and one on
// which nothing arrives for idle is closed, unless keep says a
// subscription's NOTIFYs still need it.
type tcpConn struct {
	net.Conn
	idle, write time.Duration
	keep        func() bool
	release     func()
	once        sync.Once
	answered    chan struct{} // a final answer was written (a wake-up, never blocks)
	done        chan struct{} // closed by Close

	mu       sync.Mutex
	inFlight int // requests read and not yet given a final answer
}

func (c *tcpConn) Read(p []byte) (int, error) {
	for {
		if err := c.Conn.SetReadDeadline(time.Now().Add(c.idle)); err != nil {
			return 0, err
		}
		n, err := c.Conn.Read(p)
		var ne net.Error
		if n == 0 && errors.As(err, &ne) && ne.Timeout() && c.keep() {
			continue
		}
		return n, err
	}
}

func (c *tcpConn) Write(p []byte) (int, error) {
	// A timer of its own for each write: unlike the socket's deadline, no
	// later write moves it.
	stall := time.AfterFunc(c.write, func() { c.Close() })
	n, err := c.Conn.Write(p)
	stall.Stop()
	if finalAnswer(p) {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
		select {
		case c.answered <- struct{}{}:
		default:
		}
	}
	return n, err
}

// finalAnswer reports whether p, one whole message as sipgo writes it, is
// a response of status 200 or more.
func finalAnswer(p []byte) bool {
	const prefix = "SIP/2.0 "
	return len(p) > len(prefix) && bytes.HasPrefix(p, []byte(prefix)) && p[len(prefix)] >= '2' && p[len(prefix)] <= '6'
}

func (c *tcpConn) Close() error {
	c.once.Do(func() {
		c.release()
		close(c.done)
	})
	return c.Conn.Close()
}
