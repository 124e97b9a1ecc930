// Package forward sends a copy of each new voicemail of a mailbox to the
// user's e-mail address over SMTP: the "forward by e-mail" delivery mode.
//
// # Model
//
// A Forwarder holds one SMTP submission account (Options) and, per voice
// mailbox, a destination address (Config). Each mailbox has a goroutine
// that follows the mailbox's changes (um.Service.Subscribe) and, for every
// voicemail deposited in INBOX on this node, renders it with
// um.RenderEmail (the same bytes the IMAP server and the sync engine show)
// and submits it: STARTTLS or implicit TLS, then AUTH PLAIN, MAIL, RCPT,
// DATA. Messages moved into INBOX (an undelete), e-mails mail clients
// appended and changes made on other nodes of a cluster are not forwarded,
// so each voicemail goes out once.
//
// With Config.MarkHeard the voicemail is marked heard once the server has
// accepted it, so the lamp goes off: the e-mail is the user's copy.
//
// # Failures
//
// A failed submission is retried with exponential backoff up to
// Options.MaxAttempts times, in order; messages behind it wait. After the
// last attempt the message is given up (it stays in the voice mailbox) and
// Status reports it. The queue is in memory: voicemail deposited while the
// process stops before forwarding is not forwarded after a restart.
//
// # Exclusivity
//
// A mailbox is either forwarded or synced to a mail account
// (package upstream), never both: Add claims the delivery mode "email-
// forward" with um.Service.ClaimDelivery and fails with an error wrapping
// um.ErrModeConflict when the mailbox syncs.
package forward

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/mail"
	"sync"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Mode is the delivery mode a Forwarder claims for each mailbox.
const Mode = "email-forward"

// Security says how the SMTP connection is encrypted. There is no
// plaintext mode: credentials and voicemail never cross the network in the
// clear.
type Security int

const (
	// StartTLS connects to a submission port (587) and upgrades with
	// STARTTLS before AUTH. It is the zero value and the default.
	StartTLS Security = iota
	// ImplicitTLS speaks TLS from the first byte (port 465).
	ImplicitTLS
)

// Options is the SMTP submission account forwarding uses.
type Options struct {
	// Addr is the SMTP server's host:port. Required.
	Addr string
	// Security chooses STARTTLS (default) or implicit TLS.
	Security Security
	// TLSConfig, when set, is cloned for each connection (RootCAs for a
	// private CA). ServerName defaults to Addr's host; MinVersion to TLS 1.2.
	TLSConfig *tls.Config
	// Username and Password authenticate with AUTH PLAIN after TLS. An
	// empty Username sends no AUTH (a relay that trusts the PBX).
	Username, Password string
	// From is the envelope sender (MAIL FROM), where bounces go. Required.
	From string
	// Render tunes the e-mail (the From domain, the time zone); its To
	// and Mailbox are set per mailbox.
	Render um.RenderOptions
	// LocalName is the PBX's host name for EHLO. Default "localhost".
	LocalName string
	// MaxAttempts bounds the submissions of one message. Default 5.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait between attempts, doubled
	// each time and drawn at random from its upper half. Default 1s, 5m.
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds connecting and each SMTP command. Default 1m.
	Timeout time.Duration
	// Logf receives failed submissions. Default: dropped.
	Logf func(format string, args ...any)
}

// Config is the forwarding of one voice mailbox.
type Config struct {
	// Mailbox is the voice mailbox, e.g. "1001". Required.
	Mailbox string
	// To is the user's address, e.g. `"Bob" <bob@example.com>`. Required.
	To string
	// MarkHeard marks each voicemail heard once the SMTP server accepted it.
	MarkHeard bool
}

// Status is the state of one mailbox's forwarding.
type Status struct {
	Mailbox    string
	Configured bool
	// Sent counts messages the SMTP server accepted; Failed, messages
	// given up after Options.MaxAttempts.
	Sent, Failed int
	// Pending is whether a message is waiting to be (re)sent.
	Pending bool
	// LastError is the last failure, nil after a success.
	LastError error
}

// Forwarder forwards voicemail of its mailboxes by e-mail. It is safe for
// concurrent use.
type Forwarder struct {
	svc  *um.Service
	opts Options

	mu     sync.Mutex
	boxes  map[string]*box
	closed bool
}

type box struct {
	cfg    Config
	to     *mail.Address
	mb     *um.Mailbox
	sub    *um.Subscription
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	stat Status
}

// New returns a Forwarder that submits through the account in opts.
func New(svc *um.Service, opts Options) (*Forwarder, error) {
	if svc == nil {
		return nil, fmt.Errorf("forward: New: %w: nil service", um.ErrInvalid)
	}
	if _, _, err := net.SplitHostPort(opts.Addr); err != nil {
		return nil, fmt.Errorf("forward: %w: Addr: %w", um.ErrInvalid, err)
	}
	if _, err := mail.ParseAddress(opts.From); err != nil {
		return nil, fmt.Errorf("forward: %w: From %q: %w", um.ErrInvalid, opts.From, err)
	}
	if opts.Security != StartTLS && opts.Security != ImplicitTLS {
		return nil, fmt.Errorf("forward: %w: unknown Security %d", um.ErrInvalid, opts.Security)
	}
	if opts.LocalName == "" {
		opts.LocalName = "localhost"
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 5
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Minute
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	if opts.Timeout <= 0 {
		opts.Timeout = time.Minute
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	return &Forwarder{svc: svc, opts: opts, boxes: make(map[string]*box)}, nil
}

// Add starts forwarding the voicemail deposited in a mailbox from now on.
// It fails with an error wrapping um.ErrModeConflict when the mailbox
// syncs to a mail account, um.ErrExists when it is forwarded already,
// um.ErrInvalid for a bad address and um.ErrNotFound for no such mailbox.
func (f *Forwarder) Add(ctx context.Context, cfg Config) error {
	to, err := mail.ParseAddress(cfg.To)
	if err != nil {
		return fmt.Errorf("forward: add %q: %w: To %q: %w", cfg.Mailbox, um.ErrInvalid, cfg.To, err)
	}
	mb, err := f.svc.Mailbox(ctx, cfg.Mailbox)
	if err != nil {
		return fmt.Errorf("forward: add %q: %w", cfg.Mailbox, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("forward: add %q: %w", cfg.Mailbox, um.ErrClosed)
	}
	if _, ok := f.boxes[cfg.Mailbox]; ok {
		return fmt.Errorf("forward: add %q: %w: forwarded already", cfg.Mailbox, um.ErrExists)
	}
	if err := f.svc.ClaimDelivery(cfg.Mailbox, Mode); err != nil {
		return fmt.Errorf("forward: add %q: %w", cfg.Mailbox, err)
	}
	b := &box{cfg: cfg, to: to, mb: mb, done: make(chan struct{}), stat: Status{Mailbox: cfg.Mailbox, Configured: true}}
	b.sub = f.svc.Subscribe(cfg.Mailbox, um.SubscribeOptions{Source: b})
	var bctx context.Context
	bctx, b.cancel = context.WithCancel(context.Background())
	f.boxes[cfg.Mailbox] = b
	go f.run(bctx, b)
	return nil
}

// Remove stops forwarding a mailbox and releases its delivery mode.
// Messages not yet sent are dropped. It fails with um.ErrNotFound when the
// mailbox is not forwarded.
func (f *Forwarder) Remove(mailbox string) error {
	f.mu.Lock()
	b, ok := f.boxes[mailbox]
	delete(f.boxes, mailbox)
	f.mu.Unlock()
	if !ok {
		return fmt.Errorf("forward: remove %q: %w", mailbox, um.ErrNotFound)
	}
	b.stop()
	f.svc.ReleaseDelivery(mailbox, Mode)
	return nil
}

// Status returns the forwarding state of mailbox.
func (f *Forwarder) Status(mailbox string) Status {
	f.mu.Lock()
	b := f.boxes[mailbox]
	f.mu.Unlock()
	if b == nil {
		return Status{Mailbox: mailbox}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stat
}

// Close stops forwarding every mailbox.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	boxes := f.boxes
	f.boxes = make(map[string]*box)
	f.mu.Unlock()
	for name, b := range boxes {
		b.stop()
		f.svc.ReleaseDelivery(name, Mode)
	}
	return nil
}

func (b *box) stop() {
	b.cancel()
	<-b.done
	b.sub.Close()
}

func (f *Forwarder) run(ctx context.Context, b *box) {
	defer close(b.done)
	var queue []um.Message
	for {
		changes, err := b.sub.Next()
		if err != nil {
			f.opts.Logf("forward: %s: %v: voicemail deposited meanwhile may not be forwarded", b.cfg.Mailbox, err)
		}
		queue = append(queue, f.newVoicemail(changes)...)
		for len(queue) > 0 && ctx.Err() == nil {
			f.guardedDeliver(ctx, b, queue[0])
			queue = queue[1:]
			more, _ := b.sub.Next()
			queue = append(queue, f.newVoicemail(more)...)
		}
		select {
		case <-ctx.Done():
			return
		case <-b.sub.C():
		}
	}
}

// guardedDeliver delivers one voicemail; a panic in it is logged and costs
// that one forward, never the PBX.
func (f *Forwarder) guardedDeliver(ctx context.Context, b *box, m um.Message) {
	defer func() {
		if r := recover(); r != nil {
			f.opts.Logf("forward: %s: internal error forwarding %s: %v", b.cfg.Mailbox, m.ID, r)
		}
	}()
	f.deliver(ctx, b, m)
}

// newVoicemail picks deposits out of changes: voicemail added to INBOX on
// this node, not moved there.
func (f *Forwarder) newVoicemail(changes []um.Change) []um.Message {
	var out []um.Message
	for _, c := range changes {
		if c.Node != f.svc.Node() {
			continue
		}
		for _, e := range c.Events {
			if e.Kind != um.EventAdded || e.Folder != um.Inbox || e.Message.Raw {
				continue
			}
			moved := false
			for _, r := range c.Events {
				if r.Kind == um.EventRemoved && r.Message.ID == e.Message.ID {
					moved = true
				}
			}
			if !moved {
				out = append(out, e.Message)
			}
		}
	}
	return out
}

// deliver submits one message, retrying with backoff.
func (f *Forwarder) deliver(ctx context.Context, b *box, m um.Message) {
	b.mu.Lock()
	b.stat.Pending = true
	b.mu.Unlock()
	backoff := f.opts.MinBackoff
	var err error
	for attempt := 1; attempt <= f.opts.MaxAttempts; attempt++ {
		if err = f.send(ctx, b, m); err == nil || errors.Is(err, um.ErrNotFound) {
			break
		}
		f.opts.Logf("forward: %s: message %s, attempt %d: %v", b.cfg.Mailbox, m.ID, attempt, err)
		b.mu.Lock()
		b.stat.LastError = err
		b.mu.Unlock()
		if attempt == f.opts.MaxAttempts {
			break
		}
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, f.opts.MaxBackoff)
	}
	b.mu.Lock()
	b.stat.Pending = false
	switch {
	case err == nil:
		b.stat.Sent++
		b.stat.LastError = nil
	case errors.Is(err, um.ErrNotFound):
		// Deleted before it could be sent: nothing to forward.
	default:
		b.stat.Failed++
	}
	b.mu.Unlock()
	if err == nil && b.cfg.MarkHeard {
		if err := b.mb.MarkHeard(um.WithSource(ctx, b), m.ID); err != nil && !errors.Is(err, um.ErrNotFound) {
			f.opts.Logf("forward: %s: mark %s heard: %v", b.cfg.Mailbox, m.ID, err)
		}
	}
}

func (f *Forwarder) tlsConfig() *tls.Config {
	var tc *tls.Config
	if f.opts.TLSConfig != nil {
		tc = f.opts.TLSConfig.Clone()
	} else {
		tc = new(tls.Config)
	}
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(f.opts.Addr)
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	return tc
}

func (f *Forwarder) send(ctx context.Context, b *box, m um.Message) error {
	m, err := b.mb.Message(ctx, m.ID)
	if err != nil {
		return err
	}
	audio, err := b.mb.OpenAudio(ctx, m.ID)
	if err != nil {
		return err
	}
	defer audio.Close()
	ropts := f.opts.Render
	ropts.To, ropts.Mailbox = b.to.String(), b.cfg.Mailbox
	email := um.RenderEmail(m, ropts)

	d := &net.Dialer{Timeout: f.opts.Timeout}
	conn, err := d.DialContext(ctx, "tcp", f.opts.Addr)
	if err != nil {
		return fmt.Errorf("forward: connect to %s: %w", f.opts.Addr, err)
	}
	var c *smtp.Client
	if f.opts.Security == ImplicitTLS {
		tc := tls.Client(conn, f.tlsConfig())
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return fmt.Errorf("forward: TLS with %s: %w", f.opts.Addr, err)
		}
		c = smtp.NewClient(tc)
	} else if c, err = smtp.NewClientStartTLS(conn, f.tlsConfig()); err != nil {
		return fmt.Errorf("forward: STARTTLS with %s: %w", f.opts.Addr, err)
	}
	defer c.Close()
	c.CommandTimeout = f.opts.Timeout
	// EHLO (again, after STARTTLS) completes the TLS handshake; its error
	// is the certificate's.
	if err := c.Hello(f.opts.LocalName); err != nil {
		return fmt.Errorf("forward: EHLO to %s: %w", f.opts.Addr, err)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	if f.opts.Username != "" {
		if !c.SupportsAuth("PLAIN") {
			return fmt.Errorf("forward: %s offers no AUTH PLAIN", f.opts.Addr)
		}
		if err := c.Auth(sasl.NewPlainClient("", f.opts.Username, f.opts.Password)); err != nil {
			return fmt.Errorf("forward: AUTH as %q at %s: %w", f.opts.Username, f.opts.Addr, err)
		}
	}
	from, _ := mail.ParseAddress(f.opts.From)
	if err := c.Mail(from.Address, &smtp.MailOptions{Size: email.Size()}); err != nil {
		return fmt.Errorf("forward: MAIL FROM: %w", err)
	}
	if err := c.Rcpt(b.to.Address, nil); err != nil {
		return fmt.Errorf("forward: RCPT TO %s: %w", b.to.Address, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("forward: DATA: %w", err)
	}
	if _, err := email.WriteTo(w, audio); err != nil {
		w.Close()
		return fmt.Errorf("forward: DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("forward: DATA: %w", err)
	}
	// The message is accepted; a failed QUIT does not undo that.
	c.Quit()
	return nil
}
