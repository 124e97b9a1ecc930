package imapserver

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
	_ "unsafe" // for go:linkname

	"github.com/emersion/go-imap/v2"
	goimapserver "github.com/emersion/go-imap/v2/imapserver"
)

var (
	errPreLoginBudget = errors.New("imapserver: too much data before login")
	errShutdown       = errors.New("imapserver: server shutting down")
)

// netConn sits under go-imap (and under TLS) on every connection. Before
// login it caps the bytes read and clamps read deadlines to the login
// deadline, so neither a flood nor a NOOP every 29 seconds keeps an
// unauthenticated connection alive. After login it stretches go-imap's
// fixed 35-minute idle deadline to Options.IdleTimeout. During Shutdown it
// ends the connection with BYE between commands.
type netConn struct {
	net.Conn
	srv *Server
	ip  string

	deadlineCalls atomic.Uint64 // SetReadDeadline calls; see session.Append
	busy          atomic.Int32  // >0 while a session method other than Idle runs

	mu            sync.Mutex
	authed        bool
	budget        int64
	loginDeadline time.Time
	readDeadline  time.Time // the deadline last asked for, after clamping
	shutdown      bool
	hangUp        bool // close at the next read, after the response is out
	imapConn      *goimapserver.Conn
	closeOnce     sync.Once
}

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
			c.bye()
			return 0, errShutdown
		}
		if !c.authed {
			if c.budget <= 0 {
				c.mu.Unlock()
				c.srv.overruns.Add(1)
				c.Close()
				return 0, errPreLoginBudget
			}
			if int64(len(p)) > c.budget {
				p = p[:c.budget]
			}
		}
		c.mu.Unlock()

		n, err := c.Conn.Read(p)

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
		return n, err
	}
}

func (c *netConn) SetReadDeadline(t time.Time) error {
	c.deadlineCalls.Add(1)
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
	return c.Conn.SetWriteDeadline(t)
}

func (c *netConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		err = c.Conn.Close()
		c.srv.release(c)
	})
	return err
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

func (c *netConn) setIMAPConn(ic *goimapserver.Conn) {
	c.mu.Lock()
	c.imapConn = ic
	c.mu.Unlock()
}

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

func (c *netConn) bye() {
	c.mu.Lock()
	ic, authed := c.imapConn, c.authed
	c.mu.Unlock()
	// Before login go-imap may be reading inside AUTHENTICATE with its
	// writer locked, where a BYE would wait forever: just close.
	if ic != nil && authed {
		// Bye writes through go-imap's encoder (and TLS), so it never lands
		// in the middle of a response; then it closes the connection.
		ic.Bye("Server shutting down")
	}
	c.Close()
}

// go-imap v2.0.0-beta.8 answers an error it cannot classify with this
// response. In this server every error of a session method is mapped in
// errors.go, so the only errors left for it are go-imap's own parse errors
// (a folder name or LIST pattern that is not valid modified UTF-7, a
// command over 50 KiB). Those are the client's: answer them as such rather
// than blame the server. The variable is unexported; the version is pinned.
//
//go:linkname internalServerErrorResp github.com/emersion/go-imap/v2/imapserver.internalServerErrorResp
var internalServerErrorResp *imap.StatusResponse

var patchOnce sync.Once

func patchFallbackResponse() {
	patchOnce.Do(func() {
		if internalServerErrorResp != nil {
			*internalServerErrorResp = imap.StatusResponse{
				Type: imap.StatusResponseTypeBad,
				Code: imap.ResponseCodeClientBug,
				Text: "Invalid command arguments",
			}
		}
	})
}
