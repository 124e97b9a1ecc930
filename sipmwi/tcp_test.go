package sipmwi_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embeddedum/um/sipmwi"
)

// rawPhone is a SIP peer on a bare TCP connection, which writes requests
// as text and reads what it wants when it wants: the hostile peer sipgo's
// own client cannot play.
type rawPhone struct {
	conn net.Conn
	r    *bufio.Reader
	n    int // requests made, for unique branches and Call-IDs
}

// dialRaw connects to addr with the socket options sockopts
// (SOL_SOCKET's, name to value), set before the connection exists: a
// receive buffer (SO_RCVBUF) set later leaves a window larger than the
// buffer, whose overflow TCP drops with the ACKs it carries, and the
// connection stalls in retransmissions instead of filling up.
func dialRaw(t testing.TB, addr string, sockopts map[int]int) *rawPhone {
	t.Helper()
	// The source port is bound before the connect: a port that connect
	// picks by itself may be shared by other connections to other
	// destinations (the kernel allows it), and TestTCPSubscriberGone
	// needs to listen on the phone's port once the phone is gone.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)}, Control: func(network, address string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			for name, v := range sockopts {
				serr = errors.Join(serr, syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, name, v))
			}
		}); err != nil {
			return err
		}
		return serr
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawPhone{conn: c, r: bufio.NewReader(c)}
}

// request returns the text of a fresh request (its own transaction) from
// the phone to mailbox 1001.
func (p *rawPhone) request(method, event string, extra ...string) string {
	p.n++
	local := p.conn.LocalAddr().String()
	var b strings.Builder
	fmt.Fprintf(&b, "%s sip:1001@%s SIP/2.0\r\n", method, p.conn.RemoteAddr())
	fmt.Fprintf(&b, "Via: SIP/2.0/TCP %s;branch=z9hG4bK-raw-%d\r\n", local, p.n)
	fmt.Fprintf(&b, "From: <sip:phone@%s>;tag=raw%d\r\n", local, p.n)
	fmt.Fprintf(&b, "To: <sip:1001@%s>\r\n", p.conn.RemoteAddr())
	fmt.Fprintf(&b, "Call-ID: raw-%s-%d\r\n", local, p.n)
	fmt.Fprintf(&b, "CSeq: 1 %s\r\n", method)
	fmt.Fprintf(&b, "Contact: <sip:phone@%s;transport=tcp>\r\n", local)
	b.WriteString("Max-Forwards: 70\r\n")
	if event != "" {
		fmt.Fprintf(&b, "Event: %s\r\n", event)
	}
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

// read returns the next message's start line and headers, its body read
// and dropped.
func (p *rawPhone) read(t testing.TB) (string, textproto.MIMEHeader) {
	t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	tp := textproto.NewReader(p.r)
	start, err := tp.ReadLine()
	if err != nil {
		t.Fatalf("reading a SIP message: %v", err)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("reading the headers of %q: %v", start, err)
	}
	n, _ := strconv.Atoi(h.Get("Content-Length"))
	if _, err := io.CopyN(io.Discard, p.r, int64(n)); err != nil {
		t.Fatalf("reading the body of %q: %v", start, err)
	}
	return start, h
}

// answer writes 200 OK to a request read.
func (p *rawPhone) answer(t testing.TB, h textproto.MIMEHeader) {
	t.Helper()
	var b strings.Builder
	b.WriteString("SIP/2.0 200 OK\r\n")
	for _, v := range h.Values("Via") {
		b.WriteString("Via: " + v + "\r\n")
	}
	for _, name := range []string{"From", "To", "Call-Id", "Cseq"} {
		b.WriteString(name + ": " + h.Get(name) + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	if _, err := io.WriteString(p.conn, b.String()); err != nil {
		t.Fatal(err)
	}
}

// subscribe makes a subscription to 1001 over the connection and answers
// its first NOTIFY.
func (p *rawPhone) subscribe(t testing.TB) {
	t.Helper()
	if _, err := io.WriteString(p.conn, p.request("SUBSCRIBE", "message-summary", "Expires: 600")); err != nil {
		t.Fatal(err)
	}
	var ok, notified bool
	for !ok || !notified {
		start, h := p.read(t)
		switch {
		case strings.HasPrefix(start, "SIP/2.0 200"):
			ok = true
		case strings.HasPrefix(start, "SIP/2.0"):
			t.Fatalf("SUBSCRIBE over TCP answered %q", start)
		case strings.HasPrefix(start, "NOTIFY "):
			p.answer(t, h)
			notified = true
		}
	}
}

// flood writes requests that each get an answer (489 and 405) until a
// write does not complete within stall, and returns that write's error:
// a timeout when the server stopped reading, another error when it closed
// the connection.
func (p *rawPhone) flood(stall, limit time.Duration) error {
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		var b strings.Builder
		for range 32 {
			b.WriteString(p.request("SUBSCRIBE", "presence"))
			b.WriteString(p.request("OPTIONS", ""))
		}
		p.conn.SetWriteDeadline(time.Now().Add(stall))
		if _, err := io.WriteString(p.conn, b.String()); err != nil {
			return err
		}
	}
	return fmt.Errorf("the server read every request for %v", limit)
}

func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// floodPending is the MaxPendingPerConn of TestTCPPeerThatDoesNotRead,
// and floodMargin how many goroutines above the baseline its flooding peer
// may cost: one for each request pending, and when the connection closes,
// one for each request of the last read (sipgo reads up to 32 KiB, some
// 120 of these requests), which sipgo dispatches and which then end at
// once. Without the cap the count grows with every request sent.
const (
	floodPending = 16
	floodMargin  = floodPending + 200
)

// TestTCPPeerThatDoesNotRead: a peer that sends requests over TCP and
// never reads the answers costs a bounded number of goroutines, however
// much it sends (the server stops reading it at MaxPendingPerConn
// unanswered requests), and loses its connection once a write to it has
// waited TCPWriteTimeout; the goroutines that answered it then end.
func TestTCPPeerThatDoesNotRead(t *testing.T) {
	p := newPBX(t, &sipmwi.Options{TCPWriteTimeout: time.Second, MaxPendingPerConn: floodPending})
	base := runtime.NumGoroutine()
	ph := dialRaw(t, p.tcp, map[int]int{syscall.SO_RCVBUF: 4096})

	done := make(chan error, 1)
	go func() { done <- ph.flood(30*time.Second, 30*time.Second) }()
	peak := 0
	var err error
	for waiting := true; waiting; {
		select {
		case err = <-done:
			waiting = false
		case <-time.After(5 * time.Millisecond):
		}
		peak = max(peak, runtime.NumGoroutine())
		if peak > base+floodMargin {
			t.Fatalf("%d goroutines while a peer floods requests without reading, over %d + %d", peak, base, floodMargin)
		}
	}
	if err == nil || timedOut(err) {
		t.Fatalf("flood ended with %v, want the server closing the connection", err)
	}
	t.Logf("goroutines: %d before the flood, %d at most during it", base, peak)
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > base+20 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines 20s after the connection closed, want about %d", runtime.NumGoroutine(), base)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCloseWithSubscriberThatDoesNotRead: a subscriber over TCP that stops
// reading, with a NOTIFY of a lamp change blocked in the write to it, does
// not hold up Close: Close closes the connections before it waits for the
// NOTIFYs in flight. TCPWriteTimeout is far longer than the test waits.
func TestCloseWithSubscriberThatDoesNotRead(t *testing.T) {
	p := newPBX(t, &sipmwi.Options{TCPWriteTimeout: time.Minute})
	ph := dialRaw(t, p.tcp, map[int]int{syscall.SO_RCVBUF: 4096})
	ph.subscribe(t)
	if got := p.srv.Subscriptions("1001"); got != 1 {
		t.Fatalf("Subscriptions(1001) = %d after a SUBSCRIBE over TCP, want 1", got)
	}
	// Fill both directions: the answers wait in a blocked write, and the
	// server stops reading.
	if err := ph.flood(2*time.Second, 30*time.Second); !timedOut(err) {
		t.Fatalf("flood ended with %v, want the server to stop reading", err)
	}
	p.deposit(t)
	// Time for the NOTIFY of the deposit to reach its write; one that had
	// not would make the test prove less, not fail.
	time.Sleep(500 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- p.srv.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return within 10s while a NOTIFY waits on a subscriber that does not read")
	}
}

// TestTCPConnectionsInTotal: beyond MaxConns connections from all peers
// together, a new one is closed on accept even from a peer below
// MaxConnsPerPeer; a closed one frees its place.
func TestTCPConnectionsInTotal(t *testing.T) {
	p := newPBX(t, &sipmwi.Options{MaxConnsPerPeer: 2, MaxConns: 3})
	dialFrom := func(ip string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c, err := d.Dial("tcp", p.tcp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var open []net.Conn
	for _, ip := range []string{"127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"} {
		open = append(open, dialFrom(ip))
	}
	var kept []net.Conn
	for _, c := range open {
		if alive(c) {
			kept = append(kept, c)
		}
	}
	if len(kept) != 3 {
		t.Fatalf("%d of 4 connections from 2 peers kept open, want 3 (MaxConns)", len(kept))
	}
	if alive(dialFrom("127.0.0.3")) {
		t.Fatal("a connection from a third peer was kept past MaxConns")
	}
	kept[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for !alive(dialFrom("127.0.0.3")) {
		if time.Now().After(deadline) {
			t.Fatal("no new connection kept within 10s of closing a kept one")
		}
	}
}

// TestTCPIdle: a connection on which nothing arrives for TCPIdleTimeout is
// closed; RFC 5626 keep-alives (a double CRLF, answered with a CRLF) keep
// one open, and so does a subscription made on it, whose NOTIFYs need it.
func TestTCPIdle(t *testing.T) {
	const idle = time.Second
	p := newPBX(t, &sipmwi.Options{TCPIdleTimeout: idle})

	silent := dialRaw(t, p.tcp, nil)
	silent.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := silent.conn.Read(make([]byte, 1)); err == nil || timedOut(err) {
		t.Fatalf("a silent connection read %v, want it closed by the server", err)
	}

	keeper := dialRaw(t, p.tcp, nil)
	for range 8 { // twice idle in all, a quarter of it apart
		time.Sleep(idle / 4)
		if _, err := io.WriteString(keeper.conn, "\r\n\r\n"); err != nil {
			t.Fatalf("keep-alive: %v", err)
		}
		keeper.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		pong := make([]byte, 2)
		if _, err := io.ReadFull(keeper.conn, pong); err != nil || string(pong) != "\r\n" {
			t.Fatalf("keep-alive answered %q, %v, want CRLF", pong, err)
		}
	}

	sub := dialRaw(t, p.tcp, nil)
	sub.subscribe(t)
	time.Sleep(3 * idle)
	p.deposit(t)
	start, h := sub.read(t)
	if !strings.HasPrefix(start, "NOTIFY ") {
		t.Fatalf("subscriber quiet for 3×TCPIdleTimeout got %q, want the deposit's NOTIFY", start)
	}
	sub.answer(t, h)
}

// TestTCPSubscriberGone: a lamp change for a subscription whose TCP
// connection the phone closed ends the subscription at once, without
// dialing the port the phone connected from (even when something listens
// there now) and without waiting NotifyTimeout for an answer.
func TestTCPSubscriberGone(t *testing.T) {
	p := newPBX(t, &sipmwi.Options{NotifyTimeout: time.Minute})
	ph := dialRaw(t, p.tcp, map[int]int{syscall.SO_REUSEADDR: 1})
	ph.subscribe(t)
	from := ph.conn.LocalAddr().String()
	ph.conn.(*net.TCPConn).CloseWrite()
	// The server closes its side once it reads the end.
	ph.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := ph.conn.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after closing the phone's side: %v, want EOF", err)
	}
	ph.conn.Close()
	// Where the phone's socket, in TIME_WAIT, let it (SO_REUSEADDR).
	ln, err := net.Listen("tcp", from)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	dialed := make(chan struct{}, 1)
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
			dialed <- struct{}{}
		}
	}()

	p.deposit(t)
	deadline := time.Now().Add(10 * time.Second)
	for p.srv.Subscriptions("1001") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the subscription of a closed TCP connection still held 10s after a lamp change")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-dialed:
		t.Fatal("the server dialed the port the subscriber had connected from")
	case <-time.After(200 * time.Millisecond):
	}
}

// emfileListener fails its first fails accepts with EMFILE, as the kernel
// does when the process has no descriptor left, then accepts for real.
type emfileListener struct {
	net.Listener
	fails int
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fails > 0 { // only the server's accept loop calls it
		l.fails--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestTCPAcceptOutOfDescriptors: while accepts fail for want of
// descriptors the server waits and tries again, and serves the connection
// it accepts once they succeed (a keep-alive answered), rather than
// stopping to serve the listener.
func TestTCPAcceptOutOfDescriptors(t *testing.T) {
	p := newPBX(t, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go p.srv.ServeTCP(&emfileListener{Listener: ln, fails: 4})
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 2)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "\r\n" {
		t.Fatalf("keep-alive after EMFILE on accept: read %q, %v; want CRLF", b, err)
	}
}
