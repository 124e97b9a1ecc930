package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/upstream"
)

// upstreamFlag collects -upstream BOX=URL: the mail account each voice
// mailbox is mirrored into.
type upstreamFlag []upstream.Config

func (u *upstreamFlag) String() string { return boxNames(*u, upstreamBox) }

func upstreamBox(c upstream.Config) string { return c.Mailbox }

// Set parses BOX=imaps://USER:PASSWORD@HOST[:PORT][/FOLDER] (implicit TLS,
// port 993 by default) or imap://... (STARTTLS, port 143 by default).
// USER and PASSWORD are URL-encoded: "@" in a user name is %40. Errors
// never repeat the value, which holds a password.
func (u *upstreamFlag) Set(v string) error {
	box, raw, ok := strings.Cut(v, "=")
	if !ok || box == "" {
		return errors.New("want BOX=imaps://USER:PASSWORD@HOST[:PORT][/FOLDER]")
	}
	return u.add(box, raw)
}

func (u *upstreamFlag) add(box, raw string) error {
	if err := notTwice(*u, upstreamBox, box); err != nil {
		return err
	}
	c, err := parseUpstreamURL(box, raw)
	if err != nil {
		return err
	}
	*u = append(*u, c)
	return nil
}

// parseUpstreamURL reads the account URL of mailbox box. Its errors name
// what is wrong, never the URL.
func parseUpstreamURL(box, raw string) (upstream.Config, error) {
	l, err := url.Parse(raw)
	if err != nil {
		return upstream.Config{}, fmt.Errorf("mailbox %s: malformed URL (not repeated here: it holds a password)", box)
	}
	c := upstream.Config{Mailbox: box, Folder: strings.TrimPrefix(l.Path, "/")}
	port := "993"
	switch l.Scheme {
	case "imaps":
	case "imap":
		c.Security, port = upstream.StartTLS, "143"
	default:
		return c, fmt.Errorf("mailbox %s: scheme %q: want imaps:// (TLS) or imap:// (STARTTLS)", box, l.Scheme)
	}
	if l.Hostname() == "" {
		return c, fmt.Errorf("mailbox %s: no host in the URL", box)
	}
	if l.Port() != "" {
		port = l.Port()
	}
	c.Addr = net.JoinHostPort(l.Hostname(), port)
	if l.User == nil || l.User.Username() == "" {
		return c, fmt.Errorf("mailbox %s: want USER:PASSWORD@ in the URL", box)
	}
	pass, ok := l.User.Password()
	if !ok {
		return c, fmt.Errorf("mailbox %s: want USER:PASSWORD@ in the URL", box)
	}
	c.Username, c.Credentials = l.User.Username(), upstream.Password(pass)
	return c, nil
}

// loadUpstreamFile reads -upstream-file: one "BOX URL" a line, blank lines
// and lines starting with # skipped. A file other users may read or write
// is refused: it holds passwords.
func loadUpstreamFile(path string, u *upstreamFlag) error {
	lines, err := readSecretFile("-upstream-file", path, "the passwords it holds")
	if err != nil {
		return err
	}
	for _, line := range lines {
		f := strings.Fields(line.text)
		if len(f) != 2 {
			return fmt.Errorf("-upstream-file %s:%d: want BOX URL", path, line.n)
		}
		if err := u.add(f[0], f[1]); err != nil {
			return fmt.Errorf("-upstream-file %s:%d: %w", path, line.n, err)
		}
	}
	return nil
}

// startUpstream mirrors the mailboxes given with -upstream into their mail
// accounts, keeping the engine's state in DIR/upstream.
func startUpstream(ctx context.Context, svc *um.Service, cfg *config, logf func(string, ...any)) (*upstream.Engine, error) {
	if len(cfg.upstreams) == 0 {
		return nil, nil
	}
	tc, err := trustCA("-upstream-ca", cfg.upstreamCA)
	if err != nil {
		return nil, err
	}
	state, err := upstream.NewFileState(filepath.Join(cfg.data, "upstream"))
	if err != nil {
		return nil, err
	}
	e, err := upstream.New(svc, state, &upstream.Options{Logf: logf, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	for _, box := range cfg.argvSecrets {
		logf("warning: the password of -upstream %s is on the command line, where other users of this machine can read it; use -upstream-file", box)
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

// syncConnectWait bounds how long the sync command waits for a connection
// to the mail server.
const syncConnectWait = 10 * time.Second

// syncWait runs a full sync of box, waiting up to syncConnectWait for the
// worker to get the connection it needs: right after the server comes
// back the worker may still be in its backoff, which a sync request cuts
// short.
func syncWait(ctx context.Context, e *upstream.Engine, box string) error {
	deadline := time.Now().Add(syncConnectWait)
	for {
		err := e.Sync(ctx, box)
		if err == nil || !errors.Is(err, upstream.ErrNotConnected) || time.Now().After(deadline) {
			return err
		}
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}
