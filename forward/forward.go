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
// so each voicemail goes out once. Voicemail is forwarded in the order it
// was deposited.
//
// With Config.MarkHeard the voicemail is marked heard once the server has
// accepted it, so the lamp goes off: the e-mail is the user's copy.
//
// # Failures
//
// A failed submission is retried with exponential backoff, in order;
// messages behind it wait. While the mail server or the network is down
// (connection errors, 4xx answers) it is retried however long that lasts.
// A message refused permanently (a 5xx answer such as a bad recipient or
// failed authentication, or a server certificate that does not verify)
// Options.MaxAttempts times is given up (it stays in
// the voice mailbox) and Status reports it; it is not tried again, after a
// restart either.
//
// # Restarts
//
// With Options.StateDir set, a Forwarder keeps a small file per mailbox
// there: INBOX's UIDVALIDITY, a watermark (the highest INBOX UID whose
// message was handled: forwarded, given up, or not a deposit) and the IDs
// of the last messages forwarded. The file is replaced atomically (write,
// fsync, rename, directory fsync) after each forwarded message. Add then
// lists INBOX and forwards, in order, the voicemail above the watermark
// that was not forwarded yet: what was deposited but not sent when the
// process stopped, and what was deposited while no Forwarder ran. The same
// listing follows a subscription overflow (um.ErrOverflow), when the
// changes that would have named the deposits were dropped.
//
// A message the SMTP server accepted is not sent again, with one
// exception inherent to SMTP: a crash between the server's acceptance and
// the state write sends that message once more after the restart. The
// receiver sees the same Message-ID twice.
//
// A mailbox forwarded for the first time (no state file, or after Remove)
// starts at the current watermark: its earlier voicemail is not mailed.
// So does a mailbox whose INBOX UIDVALIDITY changed (a replaced store).
//
// A listing does not say how or where a message came into INBOX. So the
// catch-up forwards every voicemail above the watermark except the
// recently forwarded ones: a message deposited before forwarding began and
// undeleted while no Forwarder ran is mailed, and in a cluster, voicemail
// another node deposited while this Forwarder was stopped is mailed by
// this one too.
//
// Without StateDir the queue is in memory: voicemail deposited but not yet
// sent when the process stops is not forwarded after a restart. A
// subscription overflow is caught up all the same, from the watermark in
// memory.
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
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/mail"
	"os"
	"sync"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/slogf"
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
	// and Mailbox are set per mailbox, and fields left empty come from
	// the Service's um.Options.Render.
	Render um.RenderOptions
	// LocalName is the PBX's host name for EHLO. Default "localhost".
	LocalName string
	// MaxAttempts bounds the submissions of one message the server refuses
	// permanently (5xx). Transient failures are retried without bound.
	// Default 5.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait between attempts, doubled
	// each time and drawn at random from its upper half. Default 1s, 5m.
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds connecting and each SMTP command. Default 1m.
	Timeout time.Duration
	// Logger receives what has no caller to return to: a refused or failed
	// submission (retried) at Warn with the attributes mailbox, uid and
	// remote; a store fault (listing INBOX, saving the state) at Error.
	// Nil means Logf when that is set, else slog.Default().
	Logger *slog.Logger
	// Logf is superseded by Logger and kept for hosts written before it:
	// when Logger is nil, each record goes to Logf as one line of text.
	Logf func(format string, args ...any)
	// StateDir, when set, is a directory (created if missing) where the
	// Forwarder keeps one small file per mailbox, so that voicemail
	// deposited but not forwarded before a restart is forwarded after it
	// (see the package doc). Forwarders running at the same time must not
	// share it; the next one after a restart must. Empty keeps
	// the state in memory only.
	StateDir string
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

	// Owned by the run goroutine once it started.
	st     state  // what is (or is to be) saved
	dirty  bool   // st changed since it was saved
	queued um.UID // the highest INBOX UID queued or passed over

	mu   sync.Mutex
	stat Status
}

// entry is one INBOX arrival in the order of its UID; forward says whether
// it is a deposit to forward, else it only moves the watermark.
type entry struct {
	m       um.Message
	forward bool
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
	opts.Logger = slogf.Logger(opts.Logger, opts.Logf)
	if opts.StateDir != "" {
		if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("forward: state directory: %w", err)
		}
	}
	return &Forwarder{svc: svc, opts: opts, boxes: make(map[string]*box)}, nil
}

// Add starts forwarding the voicemail deposited in a mailbox from now on.
// With Options.StateDir and a state saved by an earlier Forwarder, it
// also forwards the voicemail deposited since that one last handled the
// mailbox (see the package doc). It fails with an error wrapping
// um.ErrModeConflict when the mailbox syncs to a mail account, um.ErrExists
// when it is forwarded already, um.ErrInvalid for a bad address and
// um.ErrNotFound for no such mailbox.
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
	// Subscribed before the watermark is read, so no deposit falls between.
	b.sub = f.svc.Subscribe(cfg.Mailbox, um.SubscribeOptions{Source: b, MaxQueue: maxQueue})
	if err := f.initState(ctx, b); err != nil {
		b.sub.Close()
		f.svc.ReleaseDelivery(cfg.Mailbox, Mode)
		return fmt.Errorf("forward: add %q: %w", cfg.Mailbox, err)
	}
	var bctx context.Context
	bctx, b.cancel = context.WithCancel(context.Background())
	f.boxes[cfg.Mailbox] = b
	go f.run(bctx, b)
	return nil
}

// maxQueue is the subscription's MaxQueue; zero is um's default. Tests
// lower it to overflow the subscription.
var maxQueue int

// initState loads the saved state of b's mailbox or, for a mailbox
// forwarded for the first time, starts at INBOX's current end and saves
// that, so a deposit made right after Add is caught up after a crash.
func (f *Forwarder) initState(ctx context.Context, b *box) error {
	st, ok, err := f.loadState(b.cfg.Mailbox)
	if err != nil {
		return err
	}
	if !ok {
		inbox, err := b.mb.Folder(ctx, um.Inbox)
		if err != nil {
			return err
		}
		st = state{UIDValidity: inbox.UIDValidity, UID: inbox.UIDNext - 1}
		if err := f.saveState(b.cfg.Mailbox, &st); err != nil {
			return err
		}
	}
	b.st, b.queued = st, st.UID
	return nil
}

// Remove stops forwarding a mailbox and releases its delivery mode.
// Messages not yet sent are dropped, and so is the mailbox's state in
// Options.StateDir: forwarding it again starts afresh. It fails with
// um.ErrNotFound when the mailbox is not forwarded.
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
	return f.removeState(mailbox)
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

// Close stops forwarding every mailbox. With Options.StateDir, what was
// not sent yet is forwarded by the next Forwarder's Add.
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
	defer f.save(b)
	var queue []entry
	// The first pass lists INBOX above the saved watermark: what an
	// earlier Forwarder left unsent, what was deposited while none ran.
	relist := true
	var retry <-chan time.Time
	backoff := f.opts.MinBackoff
	for ctx.Err() == nil {
		changes, err := b.sub.Next()
		if err != nil {
			f.opts.Logger.Warn("forward: changes dropped; listing INBOX for the deposits among them", "mailbox", b.cfg.Mailbox, "err", err)
			relist = true
		}
		if relist {
			// The listing covers the changes just taken, and names deposits
			// the dropped changes would have named.
			more, err := f.unsent(ctx, b)
			if err != nil {
				f.opts.Logger.Error("forward: list INBOX", "mailbox", b.cfg.Mailbox, "err", err)
				retry = time.After(backoff)
				backoff = min(2*backoff, f.opts.MaxBackoff)
			} else {
				relist, retry, backoff = false, nil, f.opts.MinBackoff
				queue = append(queue, more...)
			}
		}
		if !relist {
			queue = append(queue, f.arrivals(b, changes)...)
		}
		if len(queue) > 0 {
			if f.handle(ctx, b, queue[0]) {
				queue = queue[1:]
			}
			continue
		}
		f.save(b)
		select {
		case <-ctx.Done():
		case <-b.sub.C():
		case <-retry:
		}
	}
}

// arrivals picks INBOX arrivals above b.queued out of changes, marking as
// deposits to forward the voicemail added to INBOX on this node, not moved
// there.
func (f *Forwarder) arrivals(b *box, changes []um.Change) []entry {
	var out []entry
	for _, c := range changes {
		for _, e := range c.Events {
			if e.Kind != um.EventAdded || e.Folder != um.Inbox || e.Message.UID <= b.queued {
				continue
			}
			b.queued = e.Message.UID
			moved := false
			for _, r := range c.Events {
				if r.Kind == um.EventRemoved && r.Message.ID == e.Message.ID {
					moved = true
				}
			}
			out = append(out, entry{m: e.Message, forward: c.Node == f.svc.Node() && !e.Message.Raw && !moved})
		}
	}
	return out
}

// unsent lists the voicemail of INBOX above b.queued that was not
// forwarded. A listing cannot tell a deposit from an undelete, nor this
// node's deposits from another's; the IDs recently sent keep at least
// those from going out twice.
func (f *Forwarder) unsent(ctx context.Context, b *box) ([]entry, error) {
	inbox, err := b.mb.Folder(ctx, um.Inbox)
	if err != nil {
		return nil, err
	}
	if inbox.UIDValidity != b.st.UIDValidity {
		f.opts.Logger.Warn("forward: INBOX UIDVALIDITY changed; forwarding from its current end", "mailbox", b.cfg.Mailbox, "uidvalidity", inbox.UIDValidity, "was", b.st.UIDValidity)
		b.st = state{UIDValidity: inbox.UIDValidity, UID: inbox.UIDNext - 1, Sent: b.st.Sent}
		b.queued, b.dirty = b.st.UID, true
		return nil, nil
	}
	msgs, err := b.mb.List(ctx, um.Inbox)
	if err != nil {
		return nil, err
	}
	var out []entry
	for _, m := range msgs {
		if m.UID <= b.queued {
			continue
		}
		b.queued = m.UID
		out = append(out, entry{m: m, forward: !m.Raw && !b.st.sent(m.ID)})
	}
	return out, nil
}

// handle forwards e if it is a deposit and moves the watermark past it. It
// returns false when ctx ended first: e is then still to be handled.
func (f *Forwarder) handle(ctx context.Context, b *box, e entry) bool {
	res := gone
	if e.forward {
		res = f.guardedDeliver(ctx, b, e.m)
		if res == canceled {
			return false
		}
		if res == sent {
			b.st.addSent(e.m.ID)
		}
	}
	b.st.UID = max(b.st.UID, e.m.UID)
	b.dirty = true
	if !e.forward {
		return true
	}
	// Saved before anything else, to narrow the window in which a crash
	// sends the message again.
	f.save(b)
	if res == sent && b.cfg.MarkHeard {
		if err := b.mb.MarkHeard(um.WithSource(ctx, b), e.m.ID); err != nil && !errors.Is(err, um.ErrNotFound) {
			f.opts.Logger.Error("forward: mark forwarded voicemail heard", "mailbox", b.cfg.Mailbox, "uid", e.m.UID, "err", err)
		}
	}
	return true
}

// save writes b's state if it changed; a failure is logged and retried
// with the next save.
func (f *Forwarder) save(b *box) {
	if !b.dirty {
		return
	}
	if err := f.saveState(b.cfg.Mailbox, &b.st); err != nil {
		f.opts.Logger.Error("forward: save state", "mailbox", b.cfg.Mailbox, "err", err)
		return
	}
	b.dirty = false
}

// outcome is how the delivery of one message ended.
type outcome int

const (
	sent     outcome = iota // the server accepted it
	gone                    // deleted before it could be sent
	givenUp                 // refused permanently Options.MaxAttempts times
	canceled                // the Forwarder stopped first
)

// guardedDeliver delivers one voicemail; a panic in it is logged and costs
// that one forward, never the PBX.
func (f *Forwarder) guardedDeliver(ctx context.Context, b *box, m um.Message) (res outcome) {
	defer func() {
		if r := recover(); r != nil {
			f.opts.Logger.Error("forward: internal error", "mailbox", b.cfg.Mailbox, "uid", m.UID, "panic", r)
			res = givenUp
		}
	}()
	return f.deliver(ctx, b, m)
}

// deliver submits one message, retrying with backoff.
func (f *Forwarder) deliver(ctx context.Context, b *box, m um.Message) outcome {
	b.mu.Lock()
	b.stat.Pending = true
	b.mu.Unlock()
	backoff := f.opts.MinBackoff
	var err error
	for refused := 0; ; {
		if err = f.send(ctx, b, m); err == nil || errors.Is(err, um.ErrNotFound) {
			break
		}
		if ctx.Err() != nil {
			// Stopped mid-submission: the next Forwarder tries again.
			return canceled
		}
		f.opts.Logger.Warn("forward: submission failed; retrying", "mailbox", b.cfg.Mailbox, "uid", m.UID, "remote", f.opts.Addr, "permanent", permanent(err), "err", err)
		b.mu.Lock()
		b.stat.LastError = err
		b.mu.Unlock()
		// Only a permanent refusal counts against MaxAttempts; an outage
		// of the mail server or the network is waited out, however long.
		if permanent(err) {
			if refused++; refused >= f.opts.MaxAttempts {
				break
			}
		}
		t := time.NewTimer(backoff/2 + rand.N(backoff/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return canceled
		case <-t.C:
		}
		backoff = min(2*backoff, f.opts.MaxBackoff)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stat.Pending = false
	switch {
	case err == nil:
		b.stat.Sent++
		b.stat.LastError = nil
		return sent
	case errors.Is(err, um.ErrNotFound):
		return gone
	default:
		b.stat.Failed++
		return givenUp
	}
}

// permanent reports whether retrying err cannot help until someone changes
// something: a 5xx answer (a bad recipient, failed authentication) or a
// server certificate that does not verify.
func permanent(err error) bool {
	var se *smtp.SMTPError
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	return (errors.As(err, &se) && se.Code >= 500) ||
		errors.As(err, &unknown) || errors.As(err, &invalid) || errors.As(err, &host)
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
	email := f.svc.RenderEmail(m, ropts)

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
