package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/embeddedum/um/imapserver"
	"io"
	"net"
	"strings"
	"sync"

	"github.com/embeddedum/um"
)

// imapService is the running IMAP side of the PBX.
type imapService struct {
	plain, implicit net.Addr // nil when not listening
	srv             *imapserver.Server
	wg              sync.WaitGroup // the Serve goroutines
}

// startIMAP listens on the configured addresses and serves the provisioned
// mailboxes there.
func startIMAP(svc *um.Service, cfg *config, users []user, cert tls.Certificate, logf func(string, ...any)) (*imapService, error) {
	srv, err := imapserver.New(svc, &imapserver.Options{
		Authenticate: authenticator(users),
		TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}},
		InsecureAuth: cfg.insecureAuth,
		Logf:         logf,
	})
	if err != nil {
		return nil, err
	}
	s := &imapService{srv: srv}
	var lns []net.Listener
	for _, a := range []struct {
		addr string
		dst  *net.Addr
	}{{cfg.imapAddr, &s.plain}, {cfg.imapsAddr, &s.implicit}} {
		if a.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", a.addr)
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
			srv.Close()
			return nil, err
		}
		lns = append(lns, ln)
		*a.dst = ln.Addr()
	}
	for _, ln := range lns {
		serve := srv.Serve
		if ln.Addr() == s.implicit {
			serve = srv.ServeTLS
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := serve(ln); err != nil && !errors.Is(err, imapserver.ErrServerClosed) {
				logf("IMAP on %s: %v", ln.Addr(), err)
			}
		}()
	}
	return s, nil
}

// Shutdown says BYE to every client once its current command is done and
// waits until the listeners are closed.
func (s *imapService) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	s.wg.Wait()
	return err
}

func banner(w io.Writer, cfg *config, users []user, cert tls.Certificate, s *imapService) {
	var b strings.Builder
	fmt.Fprintf(&b, "um demo PBX — data in %s\n", cfg.data)
	if cfg.pg != "" {
		fmt.Fprintf(&b, "mailboxes in PostgreSQL (-pg), cluster node %s\n", cfg.node)
	}
	for _, c := range cfg.upstreams {
		fmt.Fprintf(&b, "mailbox %s mirrored into %s at %s\n", c.Mailbox, c.Username, c.Addr)
	}
	for _, c := range cfg.forwards {
		fmt.Fprintf(&b, "mailbox %s forwarded by e-mail to %s through %s\n", c.Mailbox, c.To, cfg.smtp.addr)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "IMAP server for your mail client:\n")
	if s.plain != nil {
		host, port, _ := net.SplitHostPort(s.plain.String())
		fmt.Fprintf(&b, "  server %s, port %s, security STARTTLS\n", host, port)
	}
	if s.implicit != nil {
		host, port, _ := net.SplitHostPort(s.implicit.String())
		fmt.Fprintf(&b, "  server %s, port %s, security SSL/TLS\n", host, port)
	}
	if cfg.insecureAuth {
		b.WriteString("  passwords are accepted without TLS too (-insecure-auth)\n")
	}
	fmt.Fprintf(&b, "  certificate SHA-256 fingerprint:\n    %s\n", fingerprint(cert.Certificate[0]))
	if cfg.certFile == "" {
		b.WriteString("  (self-signed: accept it in your mail client once)\n")
	}
	b.WriteString("\nMailboxes (user name / password):\n")
	for _, u := range users {
		fmt.Fprintf(&b, "  %s / %s\n", u.box, u.password)
	}
	b.WriteString("\nPhone commands, one a line (answers on standard output):\n")
	b.WriteString("  deposit BOX CALLER [NAME...]    urgent BOX CALLER [NAME...]\n")
	b.WriteString("  deposit-file BOX CALLER FILE.wav    list BOX [FOLDER]    mwi BOX\n")
	b.WriteString("  heard|unheard|delete BOX UID    undelete BOX TRASH-UID\n")
	if len(cfg.upstreams) > 0 {
		b.WriteString("  sync BOX (wait until BOX and its mail account agree)\n")
	}
	b.WriteString("\n")
	io.WriteString(w, b.String())
}
