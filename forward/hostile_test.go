package forward_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um/forward"
	"github.com/embeddedum/um/internal/selfsigned"
)

// hostileSMTP is an SMTP server on loopback that misbehaves the way its
// mode says, speaking STARTTLS or implicit TLS as its security says, until
// passTo makes it an honest TCP proxy to the test SMTP server. Where it
// sets up TLS itself, it presents a certificate of its own, which the
// tests' clients trust.
//
// The modes:
//   - "silent": accepts and says nothing, not even the TLS handshake of
//     implicit TLS;
//   - "no answer to EHLO", "no answer to STARTTLS" (STARTTLS only):
//     greets and answers up to that command;
//   - "silent after the TLS handshake": completes the handshake (of
//     STARTTLS, or the implicit one) and says nothing more;
//   - "endless EHLO reply": answers EHLO with 250- lines without end.
type hostileSMTP struct {
	addr     string
	cert     *selfsigned.Cert
	security forward.Security
	mode     string

	target  atomic.Pointer[string] // set: pass connections through to it
	conns   atomic.Int32           // connections accepted while misbehaving
	stalled atomic.Int32           // connections it fell silent on
	dropped atomic.Int32           // of those, connections the client closed

	mu   sync.Mutex
	open map[net.Conn]bool
}

func startHostileSMTP(tb testing.TB, security forward.Security, mode string) *hostileSMTP {
	tb.Helper()
	cert, err := selfsigned.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	h := &hostileSMTP{addr: ln.Addr().String(), cert: cert, security: security, mode: mode, open: make(map[net.Conn]bool)}
	var wg sync.WaitGroup
	tb.Cleanup(func() {
		ln.Close()
		h.mu.Lock()
		for c := range h.open {
			c.Close()
		}
		h.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.open[c] = true
			h.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					c.Close()
					h.mu.Lock()
					delete(h.open, c)
					h.mu.Unlock()
				}()
				if target := h.target.Load(); target != nil {
					proxy(c, *target)
					return
				}
				h.conns.Add(1)
				h.misbehave(c)
			}()
		}
	}()
	return h
}

// passTo makes the server pass the connections it accepts from now on
// through to target.
func (h *hostileSMTP) passTo(target string) { h.target.Store(&target) }

// trust adds the server's own certificate to the roots o trusts.
func (h *hostileSMTP) trust(o *forward.Options) {
	roots := o.TLSConfig.RootCAs.Clone()
	roots.AddCert(h.cert.TLS.Leaf)
	o.TLSConfig = &tls.Config{RootCAs: roots}
}

func (h *hostileSMTP) misbehave(c net.Conn) {
	if h.mode == "silent" {
		h.silence(c)
		return
	}
	var conn io.ReadWriter = c
	if h.security == forward.ImplicitTLS {
		tc := tls.Server(c, h.cert.ServerConfig())
		if tc.Handshake() != nil {
			return
		}
		if h.mode == "silent after the TLS handshake" {
			h.silence(tc)
			return
		}
		conn = tc
	}
	r := bufio.NewReader(conn)
	io.WriteString(conn, "220 hostile ESMTP\r\n")
	if _, err := r.ReadString('\n'); err != nil { // EHLO
		return
	}
	switch h.mode {
	case "no answer to EHLO":
		h.silence(r)
		return
	case "endless EHLO reply":
		line := "250-" + strings.Repeat("x", 70) + "\r\n"
		chunk := "250-hostile\r\n" + strings.Repeat(line, 1000)
		for {
			if _, err := io.WriteString(conn, chunk); err != nil {
				return
			}
		}
	}
	io.WriteString(conn, "250-hostile\r\n250 STARTTLS\r\n")
	if _, err := r.ReadString('\n'); err != nil { // STARTTLS
		return
	}
	if h.mode == "no answer to STARTTLS" {
		h.silence(r)
		return
	}
	io.WriteString(conn, "220 go ahead\r\n")
	tc := tls.Server(c, h.cert.ServerConfig())
	if tc.Handshake() != nil {
		return
	}
	h.silence(tc) // "silent after the TLS handshake"
}

// silence reads whatever the client sends until it closes the connection.
func (h *hostileSMTP) silence(r io.Reader) {
	h.stalled.Add(1)
	io.Copy(io.Discard, r)
	h.dropped.Add(1)
}

func proxy(c net.Conn, target string) {
	b, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer b.Close()
	go func() {
		io.Copy(b, c)
		b.Close()
	}()
	io.Copy(c, b)
}

// hostileCase is a way of misbehaving and the error it should cause.
type hostileCase struct {
	security forward.Security
	mode     string
	want     func(error) bool
}

var hostileCases = []hostileCase{
	{forward.StartTLS, "silent", isTimeout},
	{forward.StartTLS, "no answer to EHLO", isTimeout},
	{forward.StartTLS, "no answer to STARTTLS", isTimeout},
	{forward.StartTLS, "silent after the TLS handshake", isTimeout},
	{forward.StartTLS, "endless EHLO reply", isTooMuch},
	{forward.ImplicitTLS, "silent", isTimeout},
	{forward.ImplicitTLS, "silent after the TLS handshake", isTimeout},
	{forward.ImplicitTLS, "endless EHLO reply", isTooMuch},
}

func (hc hostileCase) name() string {
	if hc.security == forward.ImplicitTLS {
		return "implicit TLS/" + hc.mode
	}
	return "STARTTLS/" + hc.mode
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isTooMuch(err error) bool { return errors.Is(err, forward.ErrTooMuchReceived) }

// TestForwardHostileServer: a server that falls silent at any point
// before the submission (the TLS handshake, the greeting, EHLO, STARTTLS)
// costs the attempt Options.Timeout, and one that answers EHLO without
// end costs it a bounded read, well before the Timeout. Either way
// Status reports the error, the voicemail is neither counted as sent nor
// marked heard, and it is retried until a server takes it, once.
func TestForwardHostileServer(t *testing.T) {
	for _, hc := range hostileCases {
		t.Run(hc.name(), func(t *testing.T) {
			h := startHostileSMTP(t, hc.security, hc.mode)
			timeout := 300 * time.Millisecond
			if hc.mode == "endless EHLO reply" {
				timeout = time.Minute // longer than eventually waits
			}
			fx := newFixture(t, func(o *forward.Options) {
				o.Addr, o.Security, o.Timeout, o.MaxAttempts = h.addr, hc.security, timeout, 1<<20
				h.trust(o)
			})
			ctx := context.Background()
			mb, _ := fx.svc.CreateMailbox(ctx, "1001")
			if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com", MarkHeard: true}); err != nil {
				t.Fatal(err)
			}
			m := fx.deposit(t, mb, "x")
			eventually(t, "the error, and a retry", func() bool {
				err := fx.fw.Status("1001").LastError
				return err != nil && hc.want(err) && h.conns.Load() >= 2
			})
			if st := fx.fw.Status("1001"); st.Sent != 0 || !st.Pending {
				t.Fatalf("Status() = %+v, want nothing sent and the voicemail pending", st)
			}
			if g, err := mb.Message(ctx, m.ID); err != nil || g.Heard() {
				t.Fatalf("Message() = %+v, %v; want it there, not heard", g, err)
			}

			target := fx.smtp.Addr
			if hc.security == forward.ImplicitTLS {
				target = fx.smtp.TLSAddr
			}
			h.passTo(target)
			eventually(t, "sent through the honest server", func() bool { return fx.fw.Status("1001").Sent == 1 })
			wantIDs(t, fx.smtp.ids(t), m)
			eventually(t, "marked heard", func() bool {
				g, err := mb.Message(ctx, m.ID)
				return err == nil && g.Heard()
			})
		})
	}
}

// TestCloseStopsBlockedExchange: Close returns at once while a server
// that fell silent holds a submission, however long Options.Timeout,
// and the connection it held is closed.
func TestCloseStopsBlockedExchange(t *testing.T) {
	for _, hc := range hostileCases {
		if hc.mode == "endless EHLO reply" {
			continue
		}
		t.Run(hc.name(), func(t *testing.T) {
			h := startHostileSMTP(t, hc.security, hc.mode)
			fx := newFixture(t, func(o *forward.Options) {
				o.Addr, o.Security, o.Timeout = h.addr, hc.security, time.Hour
				h.trust(o)
			})
			ctx := context.Background()
			mb, _ := fx.svc.CreateMailbox(ctx, "1001")
			if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
				t.Fatal(err)
			}
			fx.deposit(t, mb, "x")
			eventually(t, "the server fell silent", func() bool { return h.stalled.Load() == 1 })
			closed := make(chan struct{})
			go func() {
				fx.fw.Close()
				close(closed)
			}()
			select {
			case <-closed:
			case <-time.After(10 * time.Second):
				t.Fatal("Close() did not return while the server was silent")
			}
			eventually(t, "the connection closed", func() bool { return h.dropped.Load() == 1 })
		})
	}
}
