package imapserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

func TestLoginNeedsTLS(t *testing.T) {
	e := newEnv(t, nil)
	r := dialRaw(t, e.plain, nil)
	r.send("a0 CAPABILITY\r\n")
	caps := r.until("a0")
	if c := strings.Join(caps, " "); !strings.Contains(c, "LOGINDISABLED") || strings.Contains(c, "AUTH=") || !strings.Contains(c, "STARTTLS") {
		t.Fatalf("capabilities before TLS = %q, want LOGINDISABLED, STARTTLS and no AUTH=", c)
	}
	if got := r.cmd("a1", "LOGIN alice alice-pw"); !strings.Contains(got, "PRIVACYREQUIRED") {
		t.Fatalf("LOGIN before TLS = %q, want NO [PRIVACYREQUIRED]", got)
	}
	if got := r.cmd("a2", "AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXB3"); !strings.HasPrefix(got, "a2 NO") {
		t.Fatalf("AUTHENTICATE before TLS = %q, want NO", got)
	}
	if n := e.authCalls.Load(); n != 0 {
		t.Fatalf("Authenticate called %d times before TLS, want 0", n)
	}

	// STARTTLS, then login works.
	c, err := imapclient.DialStartTLS(e.plain, &imapclient.Options{TLSConfig: e.clientTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "alice-pw").Wait(); err != nil {
		t.Fatalf("LOGIN after STARTTLS = %v", err)
	}

	// TLS 1.1 is refused.
	old := e.clientTLS.Clone()
	old.MaxVersion = tls.VersionTLS11
	old.MinVersion = tls.VersionTLS10
	if conn, err := tls.Dial("tcp", e.tlsAddr, old); err == nil {
		conn.Close()
		t.Fatal("TLS 1.1 handshake succeeded, want failure")
	}
}

func TestInsecureAuthAllowsPlainLogin(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.InsecureAuth = true })
	r := dialRaw(t, e.plain, nil)
	if got := r.cmd("a1", "LOGIN alice alice-pw"); !strings.HasPrefix(got, "a1 OK") {
		t.Fatalf("LOGIN with InsecureAuth = %q, want OK", got)
	}
}

func TestStartTLSDropsPipelinedCommands(t *testing.T) {
	e := newEnv(t, nil)
	r := dialRaw(t, e.plain, nil)
	// One write: STARTTLS and a LOGIN behind it, before any handshake.
	r.send("a1 STARTTLS\r\na2 LOGIN alice alice-pw\r\n")
	if got := r.line(); !strings.HasPrefix(got, "a1 OK") {
		t.Fatalf("STARTTLS = %q, want OK", got)
	}
	tc := tls.Client(r.c, e.clientTLS)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err == nil {
		// Whatever happens, the pipelined LOGIN must not have run.
		tc.Write([]byte("a3 NOOP\r\n"))
	}
	if n := e.authCalls.Load(); n != 0 {
		t.Fatalf("pipelined LOGIN ran: Authenticate called %d times, want 0", n)
	}
}

func TestLoginFailuresDelayedAndCounted(t *testing.T) {
	var delays []time.Duration
	e := newEnv(t, func(o *Options) { o.LoginFailureDelay = time.Second })
	e.srv.sleep = func(_ context.Context, d time.Duration) { delays = append(delays, d) }
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	for i := 1; i <= 3; i++ {
		got := r.cmd("a", "LOGIN alice wrong")
		if !strings.Contains(got, "AUTHENTICATIONFAILED") {
			t.Fatalf("bad LOGIN #%d = %q, want NO [AUTHENTICATIONFAILED]", i, got)
		}
	}
	if !r.closed() {
		t.Fatal("connection still open after 3 failed logins")
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}
	if len(delays) != 3 || delays[0] != want[0] || delays[1] != want[1] || delays[2] != want[2] {
		t.Fatalf("delays = %v, want %v", delays, want)
	}
	if n := e.srv.Stats().LoginFailures; n != 3 {
		t.Fatalf("Stats().LoginFailures = %d, want 3", n)
	}
	// The next connection from the same address waits longer still.
	r2 := dialRaw(t, e.tlsAddr, e.clientTLS)
	r2.cmd("b", "LOGIN bob wrong")
	if got := delays[len(delays)-1]; got != 8*time.Second {
		t.Fatalf("4th failure delay = %v, want 8s", got)
	}
	// A good login still works.
	if got := r2.cmd("c", "LOGIN bob bob-pw"); !strings.HasPrefix(got, "c OK") {
		t.Fatalf("good LOGIN = %q", got)
	}
}

func TestPreLoginByteBudget(t *testing.T) {
	e := newEnv(t, nil)
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	// Valid commands, so only the budget can close the connection.
	line := "a NOOP\r\n"
	chunk := strings.Repeat(line, 1024)
	go func() {
		for i := 0; i < 64; i++ { // 512 KiB, four times the budget
			if _, err := r.c.Write([]byte(chunk)); err != nil {
				return
			}
		}
	}()
	if !r.closed() {
		t.Fatal("connection still open after 512 KiB before login")
	}
	if n := e.srv.Stats().Overruns; n != 1 {
		t.Fatalf("Stats().Overruns = %d, want 1", n)
	}
}

func TestNoopDoesNotExtendLoginDeadline(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.LoginTimeout = 300 * time.Millisecond })
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			if _, err := r.c.Write([]byte("a NOOP\r\n")); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if !r.closed() {
		t.Fatal("connection kept open by NOOPs past the login deadline")
	}
	<-done
}

func TestAppendLimitAndLiteralSize(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.AppendLimit = 1000 })
	c := e.dial("alice", nil)
	if !c.Caps().Has("APPENDLIMIT=1000") {
		caps, _ := c.Capability().Wait()
		if !caps.Has("APPENDLIMIT=1000") {
			t.Fatalf("caps %v lack APPENDLIMIT=1000", caps)
		}
	}
	if err := c.Create("Saved", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	if got := r.cmd("b", "APPEND Saved {200000000}"); !strings.Contains(got, "TOOBIG") {
		t.Fatalf("huge APPEND = %q, want NO [TOOBIG]", got)
	}
	// Before login, literals are capped at 4 KiB.
	// go-imap v2.0.0-beta.8 refuses the literal without a continuation
	// request (and then parses the next line as the arguments).
	r2 := dialRaw(t, e.tlsAddr, e.clientTLS)
	r2.send("a LOGIN {100000}\r\nb NOOP\r\n")
	if got := r2.line(); !strings.HasPrefix(got, "a NO") && !strings.HasPrefix(got, "a BAD") {
		t.Fatalf("huge literal before login = %q, want a tagged NO or BAD, no continuation", got)
	}
	_ = imap.UID(0)
}

func TestAppendWithoutCRLFStoresNothing(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.mailbox("1001").CreateFolder(t.Context(), "Saved"); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	r.send("b APPEND Saved {23}\r\n")
	if got := r.line(); !strings.HasPrefix(got, "+") {
		t.Fatalf("APPEND continuation = %q", got)
	}
	r.send("Subject: x\r\n\r\nhello\r\n\r\nXX\r\n")
	r.send("c NOOP\r\n")
	if !r.closed() {
		t.Fatal("connection open after a malformed APPEND")
	}
	if msgs := e.list("1001", "Saved"); len(msgs) != 0 {
		t.Fatalf("malformed APPEND stored %d messages, want 0", len(msgs))
	}
	// A good APPEND on the same path is stored, with APPENDUID.
	r2 := dialRaw(t, e.tlsAddr, e.clientTLS)
	r2.cmd("a", "LOGIN alice alice-pw")
	r2.send("b APPEND Saved {23}\r\n")
	r2.line()
	r2.send("Subject: x\r\n\r\nhello\r\n\r\n\r\n")
	if got := r2.until("b"); !strings.Contains(got[len(got)-1], "APPENDUID") {
		t.Fatalf("APPEND = %q, want OK [APPENDUID ...]", got)
	}
	if msgs := e.list("1001", "Saved"); len(msgs) != 1 {
		t.Fatalf("good APPEND stored %d messages, want 1", len(msgs))
	}
}

func TestConnectionCaps(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxConnsPerIP = 2; o.MaxConnsPerUser = 1 })
	c := e.dial("alice", nil)
	_ = c
	// A second session of the same mailbox is refused.
	c2, err := imapclient.DialTLS(e.tlsAddr, &imapclient.Options{TLSConfig: e.clientTLS})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Login("alice", "alice-pw").Wait(); codeOf(err) != imap.ResponseCodeLimit {
		t.Fatalf("second LOGIN of alice = %v, want NO [LIMIT]", err)
	}
	// A third connection from the address is closed at once.
	r := dialRawNoGreeting(t, e.plain)
	if l, _ := r.br.ReadString('\n'); !strings.HasPrefix(l, "* BYE") {
		t.Fatalf("third connection got %q, want * BYE", l)
	}
	if e.srv.Stats().Rejected != 1 {
		t.Fatalf("Stats().Rejected = %d, want 1", e.srv.Stats().Rejected)
	}
}

// TestClientThatStopsReading: a client that asks for a large body and then
// reads nothing more fills the socket's buffers; the server gives the
// write flushTimeout and then closes the connection, rather than holding
// its goroutine and buffers for good. On a connection without TLS a body
// goes out in writes of its own, past the output held back.
func TestClientThatStopsReading(t *testing.T) {
	defer func(d time.Duration) { flushTimeout = d }(flushTimeout)
	flushTimeout = 300 * time.Millisecond
	e := newEnv(t, func(o *Options) { o.InsecureAuth = true })
	e.deposit("1001", "+111", 8<<20) // 11 MB as base64: more than any socket buffer holds
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		// A small receive window, as a client on a slow link has.
		return rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	c, err := d.Dial("tcp", e.plain)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := &raw{t: t, c: c, br: bufio.NewReader(c)}
	r.line() // greeting
	if got := r.cmd("a", "LOGIN alice alice-pw"); !strings.HasPrefix(got, "a OK") {
		t.Fatalf("LOGIN = %q", got)
	}
	r.cmd("b", "EXAMINE INBOX")
	r.send("c FETCH 1 BODY.PEEK[]\r\n")
	waitFor(t, "the server to close the connection of a client that stopped reading", func() bool {
		return e.srv.Stats().Conns == 0
	})
}

// failingListener fails its first fails accepts with err, as the kernel
// does when the process has no descriptor left, then accepts for real.
type failingListener struct {
	net.Listener
	fails atomic.Int32
	err   error
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", l.err)}
	}
	return l.Listener.Accept()
}

// TestAcceptOutOfDescriptors: a server whose accepts fail because every
// descriptor is taken (EMFILE) goes on serving once they succeed again;
// any other accept error ends Serve with it.
func TestAcceptOutOfDescriptors(t *testing.T) {
	e := newEnv(t, nil)
	for _, tc := range []struct {
		err       error
		serves    bool
		wantServe string
	}{
		{syscall.EMFILE, true, ""},
		{syscall.EINVAL, false, "invalid argument"},
	} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fl := &failingListener{Listener: ln, err: tc.err}
		fl.fails.Store(4)
		served := make(chan error, 1)
		go func() { served <- e.srv.Serve(fl) }()
		if tc.serves {
			r := dialRaw(t, ln.Addr().String(), nil) // fails the test without a greeting
			if got := r.cmd("a", "NOOP"); !strings.HasPrefix(got, "a OK") {
				t.Errorf("after %v on accept: NOOP = %q, want OK", tc.err, got)
			}
			ln.Close()
			<-served
			continue
		}
		select {
		case err := <-served:
			if err == nil || !strings.Contains(err.Error(), tc.wantServe) {
				t.Errorf("Serve after %v on accept = %v, want that error", tc.err, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve went on after %v on accept, want it to return the error", tc.err)
		}
		ln.Close()
	}
}

// fromAddr is a connection from a remote address of the test's choosing.
type fromAddr struct {
	net.Conn
	remote net.Addr
}

func (c fromAddr) RemoteAddr() net.Addr { return c.remote }

// TestConnsPerIPv6Prefix: MaxConnsPerIP counts an IPv6 peer's whole /64 as
// one address, since one host may connect from any address in it; another
// /64, and each IPv4 address, has room of its own.
func TestConnsPerIPv6Prefix(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxConnsPerIP = 2 })
	admit := func(addr string) bool {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c, peer := net.Pipe()
		t.Cleanup(func() { peer.Close() })
		nc, ok := e.srv.admit(fromAddr{c, a})
		if ok {
			t.Cleanup(func() { e.srv.release(nc) })
		}
		return ok
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"[2001:db8:1:2::1]:40001", true},
		{"[2001:db8:1:2::2]:40002", true},
		{"[2001:db8:1:2:ffff::3]:40003", false}, // the same /64, a third time
		{"[2001:db8:1:3::1]:40004", true},       // the next /64
		{"192.0.2.1:40005", true},
		{"192.0.2.2:40006", true},
		{"192.0.2.2:40007", true},
		{"192.0.2.2:40008", false},
	} {
		if got := admit(tc.addr); got != tc.want {
			t.Errorf("a connection from %s admitted = %v, want %v", tc.addr, got, tc.want)
		}
	}
}
