package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/upstream"
)

// upstreamFlag collects -upstream BOX=URL: the mail account each voice
// mailbox is mirrored into.
type upstreamFlag []upstream.Config

func (u *upstreamFlag) String() string {
	names := make([]string, len(*u))
	for i, c := range *u {
		names[i] = c.Mailbox
	}
	return strings.Join(names, ",")
}

// Set parses BOX=imaps://USER:PASSWORD@HOST[:PORT][/FOLDER] (implicit TLS,
// port 993 by default) or imap://... (STARTTLS, port 143 by default).
// USER and PASSWORD are URL-encoded: "@" in a user name is %40.
func (u *upstreamFlag) Set(v string) error {
	box, raw, ok := strings.Cut(v, "=")
	if !ok || box == "" {
		return errors.New("want BOX=imaps://USER:PASSWORD@HOST[:PORT][/FOLDER]")
	}
	for _, c := range *u {
		if c.Mailbox == box {
			return fmt.Errorf("mailbox %q given twice", box)
		}
	}
	l, err := url.Parse(raw)
	if err != nil {
		return err
	}
	c := upstream.Config{Mailbox: box, Folder: strings.TrimPrefix(l.Path, "/")}
	port := "993"
	switch l.Scheme {
	case "imaps":
	case "imap":
		c.Security, port = upstream.StartTLS, "143"
	default:
		return fmt.Errorf("scheme %q: want imaps:// (TLS) or imap:// (STARTTLS)", l.Scheme)
	}
	if l.Hostname() == "" {
		return errors.New("no host in the URL")
	}
	if l.Port() != "" {
		port = l.Port()
	}
	c.Addr = net.JoinHostPort(l.Hostname(), port)
	pass, ok := l.User.Password()
	if l.User == nil || l.User.Username() == "" || !ok {
		return errors.New("want USER:PASSWORD@ in the URL")
	}
	c.Username, c.Credentials = l.User.Username(), upstream.Password(pass)
	*u = append(*u, c)
	return nil
}

// startUpstream mirrors the mailboxes given with -upstream into their mail
// accounts, keeping the engine's state in DIR/upstream.
func startUpstream(ctx context.Context, svc *um.Service, cfg *config, logf func(string, ...any)) (*upstream.Engine, error) {
	if len(cfg.upstreams) == 0 {
		return nil, nil
	}
	var tc *tls.Config
	if cfg.upstreamCA != "" {
		pem, err := os.ReadFile(cfg.upstreamCA)
		if err != nil {
			return nil, fmt.Errorf("-upstream-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-upstream-ca: no PEM certificate in %s", cfg.upstreamCA)
		}
		tc = &tls.Config{RootCAs: pool}
	}
	state, err := upstream.NewFileState(filepath.Join(cfg.data, "upstream"))
	if err != nil {
		return nil, err
	}
	e, err := upstream.New(svc, state, &upstream.Options{Logf: logf})
	if err != nil {
		return nil, err
	}
	for _, c := range cfg.upstreams {
		c.TLSConfig = tc
		if _, err := svc.EnsureMailbox(ctx, c.Mailbox); err != nil {
			e.Close()
			return nil, err
		}
		if err := e.Add(ctx, c); err != nil {
			e.Close()
			return nil, err
		}
	}
	return e, nil
}
