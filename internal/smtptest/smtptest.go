// Package smtptest is an SMTP submission server on 127.0.0.1 for tests:
// go-smtp's server with STARTTLS (a self-signed certificate) and AUTH
// PLAIN for one account, keeping the messages it accepts, and able to
// fail or stall on cue.
package smtptest

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um/internal/selfsigned"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one message the server accepted.
type Message struct {
	From, To string
	User     string // authenticated as
	Helo     string // the client's name in EHLO
	TLS      bool   // sent over TLS (STARTTLS or implicit)
	Data     []byte
}

// Server is a running server; tb's cleanup closes it.
type Server struct {
	// Addr is the listening address, "127.0.0.1:port"; TLSAddr is the
	// same server with implicit TLS (as on port 465).
	Addr, TLSAddr string
	// Roots trusts the server's certificate; CertPEM is that certificate,
	// for a child process or a -ca file.
	Roots   *x509.CertPool
	CertPEM []byte

	user, password string

	mu      sync.Mutex
	got     []Message
	failing int // DATA commands still to fail
	mails   int // MAIL commands seen
	onMail  func(n int) error
	onData  func(n int)
}

// Start starts a server that accepts mail from user with password only.
func Start(tb testing.TB, user, password string) *Server {
	tb.Helper()
	cert, err := selfsigned.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	s := &Server{Roots: cert.Pool(), CertPEM: cert.CertPEM, user: user, password: password}
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{s: s, c: c}, nil
	}))
	srv.Domain = "localhost"
	srv.TLSConfig = cert.ServerConfig()
	srv.AllowInsecureAuth = false
	// A client that stops talking must not hold the test up forever.
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tln, err := tls.Listen("tcp", "127.0.0.1:0", srv.TLSConfig)
	if err != nil {
		ln.Close()
		tb.Fatal(err)
	}
	s.Addr, s.TLSAddr = ln.Addr().String(), tln.Addr().String()
	go srv.Serve(ln)
	go srv.Serve(tln)
	tb.Cleanup(func() {
		srv.Close()
		// In case the cleanup ran before Serve took them.
		ln.Close()
		tln.Close()
	})
	return s
}

// Messages returns the messages accepted so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.got...)
}

// Mails returns how many MAIL commands the server has seen.
func (s *Server) Mails() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mails
}

// FailData makes the next n messages fail at the end of their data with a
// temporary error (451), as a server short of room would; 0 stops that.
func (s *Server) FailData(n int) {
	s.mu.Lock()
	s.failing = n
	s.mu.Unlock()
}

// OnMail sets a hook run at the n-th MAIL command (counting from 1) before
// it is answered; an error it returns is the answer.
func (s *Server) OnMail(hook func(n int) error) {
	s.mu.Lock()
	s.onMail = hook
	s.mu.Unlock()
}

// OnData sets a hook run once the n-th message was kept, before the answer
// to its end of data.
func (s *Server) OnData(hook func(n int)) {
	s.mu.Lock()
	s.onData = hook
	s.mu.Unlock()
}

type session struct {
	s    *Server
	c    *smtp.Conn
	user string
	m    Message
}

func (ss *session) AuthMechanisms() []string { return []string{sasl.Plain} }
func (ss *session) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != ss.s.user || password != ss.s.password {
			return smtp.ErrAuthFailed // 535, as real submission servers answer
		}
		ss.user = username
		return nil
	}), nil
}
func (ss *session) Reset()        { ss.m = Message{} }
func (ss *session) Logout() error { return nil }
func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	ss.s.mu.Lock()
	ss.s.mails++
	n, hook := ss.s.mails, ss.s.onMail
	ss.s.mu.Unlock()
	if hook != nil {
		if err := hook(n); err != nil {
			return err
		}
	}
	_, isTLS := ss.c.TLSConnectionState()
	ss.m = Message{From: from, User: ss.user, TLS: isTLS, Helo: ss.c.Hostname()}
	return nil
}
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error { ss.m.To = to; return nil }
func (ss *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	ss.s.mu.Lock()
	if ss.s.failing > 0 {
		ss.s.failing--
		ss.s.mu.Unlock()
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"}
	}
	ss.m.Data = b
	ss.s.got = append(ss.s.got, ss.m)
	n, hook := len(ss.s.got), ss.s.onData
	ss.s.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	return nil
}
