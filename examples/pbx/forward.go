package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/mail"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/forward"
	"github.com/embeddedum/um/upstream"
)

// forwardFlag collects -forward BOX=ADDRESS: the e-mail address each voice
// mailbox's voicemail is forwarded to.
type forwardFlag []forward.Config

func (f *forwardFlag) String() string { return boxNames(*f, forwardBox) }

func forwardBox(c forward.Config) string { return c.Mailbox }

// Set parses BOX=ADDRESS, ADDRESS an e-mail address such as
// bob@example.com or "Bob <bob@example.com>".
func (f *forwardFlag) Set(v string) error {
	box, addr, ok := strings.Cut(v, "=")
	if !ok || box == "" || addr == "" {
		return errors.New("want BOX=ADDRESS")
	}
	if err := notTwice(*f, forwardBox, box); err != nil {
		return err
	}
	if _, err := mail.ParseAddress(addr); err != nil {
		return fmt.Errorf("mailbox %s: address %q: %v", box, addr, err)
	}
	*f = append(*f, forward.Config{Mailbox: box, To: addr})
	return nil
}

// smtpAccount is the submission account of -smtp or -smtp-file.
type smtpAccount struct {
	addr     string
	security forward.Security
	user     string
	password string
}

// parseSMTPURL reads smtp://[USER:PASSWORD@]HOST[:PORT] (STARTTLS, port 587
// by default) or smtps://... (implicit TLS, port 465 by default). USER and
// PASSWORD are URL-encoded: "@" in a user name is %40. Its errors name
// what is wrong, never the URL, which holds a password.
func parseSMTPURL(raw string) (smtpAccount, error) {
	l, err := url.Parse(raw)
	if err != nil {
		return smtpAccount{}, errors.New("-smtp: malformed URL (not repeated here: it may hold a password)")
	}
	var a smtpAccount
	port := "587"
	switch l.Scheme {
	case "smtp":
		a.security = forward.StartTLS
	case "smtps":
		a.security, port = forward.ImplicitTLS, "465"
	default:
		return a, fmt.Errorf("-smtp: scheme %q: want smtp:// (STARTTLS) or smtps:// (TLS)", l.Scheme)
	}
	if l.Hostname() == "" {
		return a, errors.New("-smtp: no host in the URL")
	}
	if (l.Path != "" && l.Path != "/") || l.RawQuery != "" {
		return a, errors.New("-smtp: want no path or query after HOST[:PORT]")
	}
	if l.Port() != "" {
		port = l.Port()
	}
	a.addr = net.JoinHostPort(l.Hostname(), port)
	if l.User != nil {
		pass, ok := l.User.Password()
		if l.User.Username() == "" || !ok {
			return a, errors.New("-smtp: want USER:PASSWORD@ in the URL, or neither for a relay that needs no login")
		}
		a.user, a.password = l.User.Username(), pass
	}
	return a, nil
}

// hasPassword reports whether an -smtp URL carries a password, without
// judging the rest of it.
func hasPassword(raw string) bool {
	l, err := url.Parse(raw)
	if err != nil {
		return strings.Contains(raw, "@")
	}
	_, ok := l.User.Password()
	return ok
}

// loadSMTPFile reads -smtp-file: the -smtp URL on a line of its own, blank
// lines and lines starting with # skipped. A file other users may read or
// write is refused: it holds a password.
func loadSMTPFile(path string) (string, error) {
	lines, err := readSecretFile("-smtp-file", path, "the password it holds")
	if err != nil {
		return "", err
	}
	switch len(lines) {
	case 0:
		return "", fmt.Errorf("-smtp-file %s: no URL in the file", path)
	case 1:
		return lines[0].text, nil
	default:
		return "", fmt.Errorf("-smtp-file %s:%d: want one URL in the file", path, lines[1].n)
	}
}

// checkForward completes and checks the forwarding flags once they are all
// parsed: the SMTP account, and no mailbox both forwarded and mirrored.
func (c *config) checkForward() error {
	if c.smtpURL != "" && c.smtpFile != "" {
		return errors.New("-smtp and -smtp-file: give one")
	}
	raw := c.smtpURL
	if c.smtpFile != "" {
		var err error
		if raw, err = loadSMTPFile(c.smtpFile); err != nil {
			return err
		}
	}
	if len(c.forwards) == 0 {
		if raw != "" {
			return errors.New("-smtp without -forward: no mailbox to forward")
		}
		return nil
	}
	if raw == "" {
		return errors.New("-forward needs the SMTP server to send through: -smtp or -smtp-file")
	}
	a, err := parseSMTPURL(raw)
	if err != nil {
		if c.smtpFile != "" {
			err = fmt.Errorf("%w (in -smtp-file %s)", err, c.smtpFile)
		}
		return err
	}
	c.smtp, c.smtpArgvSecret = a, c.smtpURL != "" && hasPassword(c.smtpURL)
	if c.forwardFrom == "" {
		c.forwardFrom = "voicemail@localhost"
		if strings.Contains(a.user, "@") {
			c.forwardFrom = a.user // what submission servers expect
		}
	}
	if _, err := mail.ParseAddress(c.forwardFrom); err != nil {
		return fmt.Errorf("-forward-from %q: %v", c.forwardFrom, err)
	}
	for _, f := range c.forwards {
		if slices.ContainsFunc(c.upstreams, func(u upstream.Config) bool { return u.Mailbox == f.Mailbox }) {
			return fmt.Errorf("mailbox %s is given to -forward and -upstream: a mailbox is forwarded by e-mail or mirrored into a mail account, not both", f.Mailbox)
		}
	}
	return nil
}

// releaseLeftModes ends this node's delivery mode claims of the mailboxes
// that the flags no longer forward or mirror, so that a mailbox can switch
// from one mode to the other from one run to the next. The claims are kept
// by the store across restarts; they name the node (-node with -pg).
func releaseLeftModes(ctx context.Context, svc *um.Service, cfg *config, logf func(string, ...any)) error {
	boxes, err := svc.Mailboxes(ctx)
	if err != nil {
		return err
	}
	configured := map[string]string{}
	for _, f := range cfg.forwards {
		configured[f.Mailbox] = forward.Mode
	}
	for _, u := range cfg.upstreams {
		configured[u.Mailbox] = upstream.Mode
	}
	for _, box := range boxes {
		mode, nodes, err := svc.DeliveryMode(ctx, box)
		if err != nil {
			return err
		}
		if mode == "" || configured[box] == mode || !slices.Contains(nodes, svc.Node()) {
			continue
		}
		svc.ReleaseDelivery(box, mode)
		logf("mailbox %s is no longer given to %s here: this node's claim of mode %s released", box, modeFlag(mode), mode)
	}
	return nil
}

func modeFlag(mode string) string {
	if mode == forward.Mode {
		return "-forward"
	}
	return "-upstream"
}

// startForward forwards the mailboxes given with -forward by e-mail. With
// a store that keeps leases (both stores of the demo do), one node of a
// -pg cluster forwards each mailbox at a time.
func startForward(ctx context.Context, svc *um.Service, cfg *config, logger *slog.Logger, logf func(string, ...any)) (*forward.Forwarder, error) {
	if len(cfg.forwards) == 0 {
		return nil, nil
	}
	tc, err := trustCA("-smtp-ca", cfg.smtpCA)
	if err != nil {
		return nil, err
	}
	if cfg.nodeDefaulted {
		logf("warning: -forward with -pg and no -node: this node's claim of the forwarded mailboxes is kept under the name %s, which the next run does not reuse; give -node", cfg.node)
	}
	if cfg.smtpArgvSecret {
		logf("warning: the password of -smtp is on the command line, where other users of this machine can read it; use -smtp-file")
	}
	fw, err := forward.New(svc, forward.Options{
		Addr: cfg.smtp.addr, Security: cfg.smtp.security, TLSConfig: tc,
		Username: cfg.smtp.user, Password: cfg.smtp.password, From: cfg.forwardFrom,
		StateDir: filepath.Join(cfg.data, "forward"), Logger: logger,
	})
	if err != nil {
		return nil, fmt.Errorf("-smtp: %w", err)
	}
	for _, c := range cfg.forwards {
		if _, err := svc.EnsureMailbox(ctx, c.Mailbox); err != nil {
			fw.Close()
			return nil, err
		}
		if err := fw.Add(ctx, c); err != nil {
			fw.Close()
			return nil, fmt.Errorf("-forward %s: %w", c.Mailbox, err)
		}
	}
	return fw, nil
}
