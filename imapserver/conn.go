package imapserver

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/embeddedum/um/internal/pieces"
)

var (
	errPreLoginBudget = errors.New("imapserver: too much data before login")
	errShutdown       = errors.New("imapserver: server shutting down")
)

// netConn sits under the engine (and under TLS) on every connection.
// Before login it caps the bytes read and clamps read deadlines to the
// login deadline, so neither a flood nor a NOOP every 29 seconds keeps an
// unauthenticated connection alive. During Shutdown it makes the engine's
// next read between commands fail with errShutdown, and the engine says
// BYE.
type netConn struct {
	net.Conn
	srv  *Server
	ip   string // the remote address, for the log
	peer string // what MaxConnsPerIP counts it by (internal/netpeer)

	failed atomic.Bool  // a read or write failed: the connection is done
	busy   atomic.Int32 // >0 while a session method other than Idle runs

	mu            sync.Mutex
	authed        bool
	budget        int64
	loginDeadline time.Time
	readDeadline  time.Time // the deadline last asked for, after clamping
	shutdown      bool
	idling        bool // in IDLE: wake interrupts the read (idle.go)
	woken         bool // wake interrupted it since idling was last cleared
	hangUp        bool // close at the next read, after the response is out
	closeOnce     sync.Once
	aborted       atomic.Bool // Close drops pending output

	// Write-behind (see Write). wmu is held across writes to Conn, so
	// output keeps its order; Close never waits for it.
	wmu     sync.Mutex
	wbuf    []byte // pending output; nil when none (back in its pool)
	reading int    // Reads in progress; writes meanwhile go straight out
	werr    error  // the first write error; every later write fails with it

	wdl atomic.Pointer[time.Time] // the write deadline last asked for
}

const (
	// writeBehindMax is the most output a connection holds back; more is
	// sent at once: about four full TLS records.
	writeBehindMax = pieces.Size
	// writeBehindSmall is the buffer output is held in first, until more
	// is pending. A connection holds its buffer from its first response
	// until it next reads, through the commands its client pipelined, so
	// 20 busy connections held 1.3 MB of 64 KiB buffers; yet under
	// imaptest's stress run 82% of what was sent at once was 8 KiB or
	// less, and the rest mostly a body larger than writeBehindMax.
	writeBehindSmall = 8 << 10
	// closeFlushTimeout bounds the flush at Close, as TLS bounds its
	// close_notify alert.
	closeFlushTimeout = 5 * time.Second
)

// flushTimeout bounds every write to the client when no write deadline is
// asked for: a client that stops reading would else hold its connection's
// goroutine, and whatever it holds, for good once the socket's buffers
// are full. 30 seconds, as go-imap's server gives a response. A variable
// for a test.
var flushTimeout = 30 * time.Second

// smallBufPool holds the small output buffers; the full ones are pieces,
// shared with the APPEND spool and the store's contents.
var smallBufPool = sync.Pool{New: func() any { b := make([]byte, 0, writeBehindSmall); return &b }}

func newNetConn(c net.Conn, s *Server, ip string) *netConn {
	nc := &netConn{Conn: c, srv: s, ip: ip, budget: int64(s.opts.MaxPreLoginBytes)}
	nc.loginDeadline = time.Now().Add(s.opts.LoginTimeout)
	nc.readDeadline = nc.loginDeadline
	c.SetReadDeadline(nc.loginDeadline)
	return nc
}

func (c *netConn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if c.hangUp {
			c.mu.Unlock()
			c.Close()
			return 0, net.ErrClosed
		}
		if c.shutdown && c.busy.Load() == 0 {
			c.mu.Unlock()
			return 0, errShutdown
		}
		if !c.authed {
			if c.budget <= 0 {
				c.mu.Unlock()
				c.srv.overruns.Add(1)
				c.abort()
				return 0, errPreLoginBudget
			}
			if int64(len(p)) > c.budget {
				p = p[:c.budget]
			}
		}
		c.mu.Unlock()

		if err := c.startRead(); err != nil {
			return 0, err
		}
		n, err := c.Conn.Read(p)
		c.endRead()

		c.mu.Lock()
		if !c.authed {
			c.budget -= int64(n)
		}
		shutdown, dl := c.shutdown, c.readDeadline
		c.mu.Unlock()
		var ne net.Error
		if n == 0 && err != nil && shutdown && errors.As(err, &ne) && ne.Timeout() && (dl.IsZero() || time.Now().Before(dl)) {
			// Woken by Shutdown while a command was running: go on reading
			// for it, or say BYE at the top of the loop.
			c.Conn.SetReadDeadline(dl)
			continue
		}
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			// A timeout is no failure: the engine ends waits with one.
			c.failed.Store(true)
		}
		return n, err
	}
}

func (c *netConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	now := time.Now()
	switch {
	case !c.authed:
		if t.IsZero() || t.After(c.loginDeadline) {
			t = c.loginDeadline
		}
	case !t.IsZero() && t.Sub(now) > MinIdleTimeout:
		t = now.Add(c.srv.opts.IdleTimeout)
	}
	c.readDeadline = t
	shutdown := c.shutdown && c.busy.Load() == 0
	c.mu.Unlock()
	if shutdown {
		t = now
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *netConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *netConn) SetWriteDeadline(t time.Time) error {
	c.wdl.Store(&t)
	return c.Conn.SetWriteDeadline(t)
}

// Write holds output back while no read is waiting, and sends it when the
// connection next reads (before the server waits for the client), when
// writeBehindMax bytes are pending, when an IDLE starts, and at Close.
// go-imap flushes after every response line and TLS seals each flush in a
// record of its own, so without this a FETCH of 25 messages took 26
// write system calls and a 500 KB body about 40 (each up to 16 KiB);
// under load those calls were the largest part of the server's CPU time.
// A write error is returned by the write or read that sends the output.
// Writes while a read is waiting (IDLE updates) go out at once.
func (c *netConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if c.reading > 0 {
		return c.writeLocked(p) // nothing is pending: startRead flushed
	}
	if len(c.wbuf)+len(p) > writeBehindMax {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= writeBehindMax {
			return c.writeLocked(p)
		}
	}
	switch {
	case c.wbuf == nil && len(p) <= writeBehindSmall:
		c.wbuf = (*smallBufPool.Get().(*[]byte))[:0]
	case len(c.wbuf)+len(p) > cap(c.wbuf):
		// Only a small buffer overflows here: move to a full one.
		b := append(pieces.Get(), c.wbuf...)
		c.releaseBufLocked()
		c.wbuf = b
	}
	c.wbuf = append(c.wbuf, p...)
	return len(p), nil
}

// writeLocked sends p under the write deadline asked for or, when none
// is, flushTimeout: the held-back output, a body larger than what is held
// back, and what goes out at once while a read waits (IDLE updates) alike.
func (c *netConn) writeLocked(p []byte) (int, error) {
	var n int
	var err error
	if dl := c.wdl.Load(); dl == nil || dl.IsZero() {
		c.Conn.SetWriteDeadline(time.Now().Add(flushTimeout))
		n, err = c.Conn.Write(p)
		var t time.Time // or one asked for meanwhile
		if dl := c.wdl.Load(); dl != nil {
			t = *dl
		}
		c.Conn.SetWriteDeadline(t)
	} else {
		n, err = c.Conn.Write(p)
	}
	if err != nil {
		c.werr = err
		c.failed.Store(true)
	}
	return n, err
}

// flushLocked sends the pending output.
func (c *netConn) flushLocked() error {
	if len(c.wbuf) == 0 {
		return c.werr
	}
	if c.werr == nil {
		c.writeLocked(c.wbuf)
	}
	c.releaseBufLocked()
	return c.werr
}

func (c *netConn) releaseBufLocked() {
	if c.wbuf == nil {
		return
	}
	b := c.wbuf[:0]
	if cap(b) == writeBehindMax {
		pieces.Put(b)
	} else {
		smallBufPool.Put(&b)
	}
	c.wbuf = nil
}

// flush sends the pending output.
func (c *netConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

// startRead sends the pending output and lets writes go straight out until
// endRead.
func (c *netConn) startRead() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.flushLocked(); err != nil {
		return err
	}
	c.reading++
	return nil
}

func (c *netConn) endRead() {
	c.wmu.Lock()
	c.reading--
	c.wmu.Unlock()
}

// Close sends the pending output (unless abort was called) and closes the
// connection.
func (c *netConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		// A write blocked on a stuck client holds wmu; closing unblocks
		// it, so do not wait for it.
		if c.wmu.TryLock() {
			if !c.aborted.Load() && len(c.wbuf) > 0 && c.werr == nil {
				// TLS set a deadline of now after its close_notify.
				c.SetWriteDeadline(time.Now().Add(closeFlushTimeout))
				c.writeLocked(c.wbuf)
			}
			c.releaseBufLocked()
			c.werr = net.ErrClosed // nothing may be held any more
			c.wmu.Unlock()
		}
		err = c.Conn.Close()
		c.srv.release(c)
	})
	return err
}

// abort closes the connection without sending pending output.
func (c *netConn) abort() error {
	c.aborted.Store(true)
	return c.Close()
}

// loggedIn lifts the pre-login limits.
func (c *netConn) loggedIn() {
	c.mu.Lock()
	c.authed = true
	c.mu.Unlock()
}

// closeAfterResponse closes the connection when go-imap next reads, so the
// answer to the current command still goes out.
func (c *netConn) closeAfterResponse() {
	c.mu.Lock()
	c.hangUp = true
	c.mu.Unlock()
}

func (c *netConn) setEngine(*conn) {}

// startShutdown asks the connection to say BYE and close once no command
// is running. A blocked read is woken by an expired deadline.
func (c *netConn) startShutdown() {
	c.mu.Lock()
	c.shutdown = true
	c.mu.Unlock()
	if c.busy.Load() == 0 {
		c.Conn.SetReadDeadline(time.Now())
	}
}
