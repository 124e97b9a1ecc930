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
	"github.com/embeddedum/um/internal/lease"
	"github.com/embeddedum/um/internal/slogf"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/google/uuid"
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
	// Timeout bounds connecting, setting up TLS (with STARTTLS, the
	// greeting, EHLO and STARTTLS together) and each SMTP command after
	// that. Default 1m.
	Timeout time.Duration
	// Logger receives what has no caller to return to: a refused or failed
	// submission (retried) at Warn with the attributes mailbox, uid and
	// remote; a store fault (listing INBOX, saving the state) at Error; a
	// message in doubt sent again at Warn; the lease of a mailbox taken
	// or lost, and a state file migrated into the store, at Info.
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
	// the state in memory only. When the store keeps the state
	// (um.OutwardState and um.Leaser), StateDir is only read, to migrate
	// the files an earlier version left there into the store.
	StateDir string
	// LeaseTTL is the time to live of the lease that gives one node of a
	// cluster a mailbox's forwarding (see the package doc): how long, at
	// most, the other nodes wait after the owner died before one of them
	// takes the work over. The owner renews it every LeaseTTL/3. Default
	// 15 s. Unused when the store has no um.Leaser.
	LeaseTTL time.Duration
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
	// Sent counts messages the SMTP server accepted from this node;
	// Failed, messages this node gave up after Options.MaxAttempts.
	Sent, Failed int
	// Pending is whether a message is waiting to be (re)sent.
	Pending bool
	// LastError is the last failure, nil after a success.
	LastError error
	// Resent counts messages sent again because an earlier attempt (of
	// this node, of another node, or of this process before a restart) was
	// cut off while the server may have been accepting them; see "the
	// message in doubt" in the package doc.
	Resent int
	// Owner is the node that holds the mailbox's forwarding, as this node
	// last saw it (empty when it saw nobody hold it), and Owned whether
	// that is this node. Without um.Leaser, each node owns its own.
	Owner string
	Owned bool
}

// Forwarder forwards voicemail of its mailboxes by e-mail. It is safe for
// concurrent use.
type Forwarder struct {
	svc     *um.Service
	opts    Options
	leaser  um.Leaser       // nil: every node forwards its own deposits
	outward um.OutwardState // nil: the state is in StateDir or memory

	mu     sync.Mutex
	boxes  map[string]*box
	closed bool
}

type box struct {
	cfg    Config
	to     *mail.Address
	mb     *um.Mailbox
	start  state // INBOX's end at Add: the state of a mailbox that has none
	keeper *lease.Keeper
	cancel context.CancelFunc
	done   chan struct{}

	// Owned by the work goroutine while it runs (one at a time).
	held   *lease.Held
	sub    *um.Subscription
	st     state     // what is (or is to be) saved
	dirty  bool      // st changed since it was saved
	queued um.UID    // the highest INBOX UID queued or passed over
	doubt  uuid.UUID // the message in doubt found when the work began
	// skip holds INBOX arrivals above queued that the changes showed are
	// not deposits (moves, appended e-mail), for the next listing.
	skip map[uuid.UUID]bool

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
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 15 * time.Second
	}
	opts.Logger = slogf.Logger(opts.Logger, opts.Logf)
	if opts.StateDir != "" {
		if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
			return nil, fmt.Errorf("forward: state directory: %w", err)
		}
	}
	f := &Forwarder{svc: svc, opts: opts, boxes: make(map[string]*box)}
	if l, ok := um.StoreAs[um.Leaser](svc.Store()); ok {
		f.leaser = l
		// State in the store needs a lease to fence its writes with.
		if o, ok := um.StoreAs[um.OutwardState](svc.Store()); ok {
			f.outward = o
		}
	}
	return f, nil
}

// Add starts forwarding the voicemail deposited in a mailbox from now on.
// With a state saved by an earlier Forwarder (in the store, or in
// Options.StateDir), it also forwards the voicemail deposited since that
// one last handled the mailbox (see the package doc). In a cluster the
// mailbox is forwarded by whichever configured node holds its lease; Add
// returns without waiting for it. It fails with an error wrapping
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
	if f.outward == nil {
		// A state file that cannot be read is the host's to fix, now.
		if _, _, err := f.loadFile(cfg.Mailbox); err != nil {
			return fmt.Errorf("forward: add %q: %w", cfg.Mailbox, err)
		}
	}
	inbox, err := mb.Folder(ctx, um.Inbox)
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
	b := &box{
		cfg: cfg, to: to, mb: mb, done: make(chan struct{}),
		start: state{UIDValidity: inbox.UIDValidity, UID: inbox.UIDNext - 1},
		stat:  Status{Mailbox: cfg.Mailbox, Configured: true},
	}
	b.keeper = lease.New(lease.Options{
		Leaser: f.leaser, Mailbox: cfg.Mailbox, Purpose: Purpose, Node: f.svc.Node(),
		TTL: f.opts.LeaseTTL, Logger: f.opts.Logger,
	})
	var bctx context.Context
	bctx, b.cancel = context.WithCancel(context.Background())
	f.boxes[cfg.Mailbox] = b
	go func() {
		defer close(b.done)
		b.keeper.Run(bctx, func(ctx context.Context, h *lease.Held) { f.work(ctx, b, h) })
	}()
	return nil
}

// maxQueue is the subscription's MaxQueue; zero is um's default. Tests
// lower it to overflow the subscription.
var maxQueue int

// Remove stops this node's forwarding of a mailbox and releases this
// node's claim of the delivery mode. Messages not yet sent are dropped
// when no other node forwards the mailbox, and so is the mailbox's state
// (in the store or in Options.StateDir): forwarding it again starts
// afresh. It fails with um.ErrNotFound when the mailbox is not forwarded
// here.
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
	return f.forget(mailbox)
}

// forget removes the state of a mailbox no node forwards any more.
func (f *Forwarder) forget(mailbox string) error {
	ctx, cancel := context.WithTimeout(context.Background(), f.storeTimeout())
	defer cancel()
	mode, nodes, err := f.svc.DeliveryMode(ctx, mailbox)
	if err != nil {
		return fmt.Errorf("forward: remove %q: %w", mailbox, err)
	}
	if mode == Mode && len(nodes) > 0 {
		return nil // forwarded elsewhere: the state is theirs
	}
	l := um.Lease{Mailbox: mailbox, Purpose: Purpose, Holder: f.svc.Node()}
	if f.outward != nil {
		if l, err = f.leaser.AcquireLease(ctx, mailbox, Purpose, f.svc.Node(), f.opts.LeaseTTL); err != nil {
			if errors.Is(err, um.ErrLeaseHeld) {
				return nil // a node that forwarded it still winds down
			}
			return fmt.Errorf("forward: remove %q: %w", mailbox, err)
		}
		defer f.leaser.ReleaseLease(context.WithoutCancel(ctx), l)
	}
	return f.removeState(ctx, l, mailbox)
}

// Status returns the forwarding state of mailbox on this node.
func (f *Forwarder) Status(mailbox string) Status {
	f.mu.Lock()
	b := f.boxes[mailbox]
	f.mu.Unlock()
	if b == nil {
		return Status{Mailbox: mailbox}
	}
	owner, _, mine := b.keeper.Owner()
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.stat
	st.Owner, st.Owned = owner, mine
	return st
}

// Close stops forwarding every mailbox on this node, handing each one's
// lease back so another node can take the work over at once. With a state
// kept in the store or Options.StateDir, what was not sent yet is
// forwarded by the next owner. The delivery mode claims stay: the
// mailboxes are still forwarded (see Remove).
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	boxes := f.boxes
	f.boxes = make(map[string]*box)
	f.mu.Unlock()
	var wg sync.WaitGroup
	for _, b := range boxes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.stop()
		}()
	}
	wg.Wait()
	return nil
}

func (b *box) stop() {
	b.cancel()
	<-b.done
}

// storeTimeout bounds one store call made for the state or the lease.
func (f *Forwarder) storeTimeout() time.Duration {
	return max(f.opts.LeaseTTL/3, time.Second)
}

// work forwards b's mailbox while this node holds its lease h: it loads
// the state, checks with a fenced write that the lease is still this
// node's, catches up, then follows the changes until ctx ends or the
// store says the lease passed on.
func (f *Forwarder) work(ctx context.Context, b *box, h *lease.Held) {
	b.held = h
	b.sub = f.svc.Subscribe(b.cfg.Mailbox, um.SubscribeOptions{Source: b, MaxQueue: maxQueue})
	defer b.sub.Close()
	lctx, cancel := context.WithTimeout(ctx, f.storeTimeout())
	st, ok, err := f.loadState(lctx, b, h.Lease())
	cancel()
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, um.ErrLeaseHeld) {
			f.opts.Logger.Error("forward: load state", "mailbox", b.cfg.Mailbox, "err", err)
			b.setErr(err)
		}
		return
	}
	if !ok {
		st = b.start
	}
	b.st, b.queued, b.dirty, b.skip, b.doubt = st, st.UID, true, make(map[uuid.UUID]bool), uuid.Nil
	if st.Sending != nil {
		b.doubt = st.Sending.ID
		f.opts.Logger.Warn("forward: voicemail in doubt: the last owner may have had it accepted; sending it again with the same Message-ID",
			"mailbox", b.cfg.Mailbox, "uid", st.Sending.UID, "id", st.Sending.ID)
	}
	if err := f.save(ctx, b); err != nil {
		if !errors.Is(err, um.ErrLeaseHeld) {
			b.setErr(err)
		}
		return
	}
	f.follow(ctx, b)
	f.save(ctx, b)
}

func (b *box) setErr(err error) {
	b.mu.Lock()
	b.stat.LastError = err
	b.mu.Unlock()
}

// follow forwards what the changes of b's mailbox name, in order, until
// ctx ends or the lease is lost.
func (f *Forwarder) follow(ctx context.Context, b *box) {
	var queue []entry
	// The first pass lists INBOX above the saved watermark: what an
	// earlier owner left unsent, what was deposited while none ran.
	relist := true
	var retry <-chan time.Time
	backoff := f.opts.MinBackoff
	for ctx.Err() == nil {
		changes, err := b.sub.Next()
		if err != nil {
			f.opts.Logger.Warn("forward: changes dropped; listing INBOX for the deposits among them", "mailbox", b.cfg.Mailbox, "err", err)
			relist = true
		}
		if f.leaser != nil && f.noteChanges(b, changes) {
			// Deposits of every node are this owner's, and a listing
			// gives them in UID order however their changes arrived.
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
		} else if f.leaser == nil {
			queue = append(queue, f.arrivals(b, changes)...)
		}
		if len(queue) > 0 {
			done, lost := f.handle(ctx, b, queue[0])
			if lost {
				return
			}
			if done {
				queue = queue[1:]
			}
			continue
		}
		if err := f.save(ctx, b); errors.Is(err, um.ErrLeaseHeld) {
			return
		}
		select {
		case <-ctx.Done():
		case <-b.sub.C():
		case <-retry:
		}
	}
}

// noteChanges reports whether changes add to INBOX above b.queued, and
// remembers the arrivals that are no deposits: moved into INBOX (an
// undelete) or appended e-mail.
func (f *Forwarder) noteChanges(b *box, changes []um.Change) bool {
	arrived := false
	for _, c := range changes {
		for _, e := range c.Events {
			if e.Kind != um.EventAdded || e.Folder != um.Inbox || e.Message.UID <= b.queued {
				continue
			}
			arrived = true
			if e.Message.Raw || moved(c, e.Message.ID) {
				b.skip[e.Message.ID] = true
			}
		}
	}
	return arrived
}

// moved reports whether change c removed message id from a folder as well
// as adding it to INBOX: a move, not a deposit.
func moved(c um.Change, id uuid.UUID) bool {
	for _, r := range c.Events {
		if r.Kind == um.EventRemoved && r.Message.ID == id {
			return true
		}
	}
	return false
}

// arrivals picks INBOX arrivals above b.queued out of changes, marking as
// deposits to forward the voicemail added to INBOX on this node, not moved
// there. It serves stores without um.Leaser, where each node forwards its
// own deposits.
func (f *Forwarder) arrivals(b *box, changes []um.Change) []entry {
	var out []entry
	for _, c := range changes {
		for _, e := range c.Events {
			if e.Kind != um.EventAdded || e.Folder != um.Inbox || e.Message.UID <= b.queued {
				continue
			}
			b.queued = e.Message.UID
			out = append(out, entry{m: e.Message, forward: c.Node == f.svc.Node() && !e.Message.Raw && !moved(c, e.Message.ID)})
		}
	}
	return out
}

// unsent lists the voicemail of INBOX above b.queued that was not
// forwarded. A listing cannot tell a deposit from an undelete; the IDs
// recently sent, and the arrivals the changes showed are no deposits, keep
// those from going out.
func (f *Forwarder) unsent(ctx context.Context, b *box) ([]entry, error) {
	inbox, err := b.mb.Folder(ctx, um.Inbox)
	if err != nil {
		return nil, err
	}
	if inbox.UIDValidity != b.st.UIDValidity {
		f.opts.Logger.Warn("forward: INBOX UIDVALIDITY changed; forwarding from its current end", "mailbox", b.cfg.Mailbox, "uidvalidity", inbox.UIDValidity, "was", b.st.UIDValidity)
		b.st = state{UIDValidity: inbox.UIDValidity, UID: inbox.UIDNext - 1, Sent: b.st.Sent}
		b.queued, b.dirty = b.st.UID, true
		clear(b.skip)
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
		out = append(out, entry{m: m, forward: !m.Raw && !b.st.sent(m.ID) && !b.skip[m.ID]})
	}
	clear(b.skip)
	return out, nil
}

// handle forwards e if it is a deposit and moves the watermark past it. It
// returns done false when ctx ended first (e is then still to be handled),
// and lost true when the store said this node's lease passed on: the work
// must stop at once.
func (f *Forwarder) handle(ctx context.Context, b *box, e entry) (done, lost bool) {
	res := gone
	if e.forward {
		res = f.guardedDeliver(ctx, b, e.m)
		switch res {
		case canceled:
			return false, false
		case leaseLost:
			return false, true
		case sent:
			b.st.addSent(e.m.ID)
			if e.m.ID == b.doubt {
				b.mu.Lock()
				b.stat.Resent++
				b.mu.Unlock()
			}
		}
	}
	if b.st.Sending != nil && b.st.Sending.ID == e.m.ID {
		b.st.Sending = nil // the server's answer is known
	}
	b.st.UID = max(b.st.UID, e.m.UID)
	b.dirty = true
	if !e.forward {
		return true, false
	}
	// Saved before anything else, to narrow the window in which a crash
	// sends the message again.
	if err := f.save(ctx, b); errors.Is(err, um.ErrLeaseHeld) {
		return true, true
	}
	if res == sent && b.cfg.MarkHeard {
		if err := b.mb.MarkHeard(um.WithSource(ctx, b), e.m.ID); err != nil && !errors.Is(err, um.ErrNotFound) {
			f.opts.Logger.Error("forward: mark forwarded voicemail heard", "mailbox", b.cfg.Mailbox, "uid", e.m.UID, "err", err)
		}
	}
	return true, false
}

// save writes b's state if it changed, fenced by the lease. A failure is
// logged and retried with the next save; one wrapping um.ErrLeaseHeld
// means the work must stop. The write is not cut short when ctx ends (the
// state of a message just sent must be kept), only bounded in time; the
// fence keeps a late write from doing harm.
func (f *Forwarder) save(ctx context.Context, b *box) error {
	if !b.dirty {
		return nil
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), f.storeTimeout())
	defer cancel()
	if err := f.putState(sctx, b.held.Lease(), b.cfg.Mailbox, &b.st); err != nil {
		if errors.Is(err, um.ErrLeaseHeld) {
			f.opts.Logger.Info("forward: lease passed on; stopping", "mailbox", b.cfg.Mailbox)
		} else {
			f.opts.Logger.Error("forward: save state", "mailbox", b.cfg.Mailbox, "err", err)
		}
		return err
	}
	b.dirty = false
	return nil
}

// outcome is how the delivery of one message ended.
type outcome int

const (
	sent      outcome = iota // the server accepted it
	gone                     // deleted before it could be sent
	givenUp                  // refused permanently Options.MaxAttempts times
	canceled                 // the Forwarder stopped first
	leaseLost                // the store said this node's lease passed on
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
	doubt := false // an attempt may have been taken by the server
	for refused := 0; ; {
		if err = f.send(ctx, b, m); err == nil || errors.Is(err, um.ErrNotFound) {
			break
		}
		doubt = doubt || errors.Is(err, errInDoubt)
		if errors.Is(err, um.ErrLeaseHeld) {
			// Another node owns the mailbox now, and sends this message.
			b.mu.Lock()
			b.stat.Pending = false
			b.mu.Unlock()
			return leaseLost
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
		if doubt && m.ID != b.doubt { // a takeover's doubt is counted by handle
			b.stat.Resent++
		}
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

	c, err := f.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	// EHLO (again, after STARTTLS) completes the TLS handshake; its error
	// is the certificate's.
	if err := c.Hello(f.opts.LocalName); err != nil {
		return fmt.Errorf("forward: EHLO to %s: %w", f.opts.Addr, err)
	}
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
		return fmt.Errorf("forward: DATA: %w", err)
	}
	// Ending the data lets the server accept the message. The state says
	// first that the message is in doubt, for whoever carries on after a
	// crash in what follows; that write is also the last check that this
	// node still holds the lease. When it fails, the connection is closed
	// without the end of data, and the server discards the message.
	b.st.Sending, b.dirty = &inflight{ID: m.ID, UID: m.UID}, true
	if err := f.save(ctx, b); err != nil {
		return err
	}
	// From here the server may take the message. Its answer is awaited
	// even when the work is being stopped (a Close, the lease's margin
	// running out), so that a stop does not leave the message in doubt,
	// but then only for a grace that ends well before the lease could
	// pass to another node.
	if !stop() || ctx.Err() != nil {
		return fmt.Errorf("forward: stopped before the end of DATA: %w", context.Cause(ctx))
	}
	answered := make(chan struct{})
	grace := context.AfterFunc(ctx, func() {
		t := time.NewTimer(max(f.opts.LeaseTTL/10, 100*time.Millisecond))
		defer t.Stop()
		select {
		case <-t.C:
			c.Close()
		case <-answered:
		}
	})
	err = w.Close()
	close(answered)
	grace()
	if err != nil {
		var se *smtp.SMTPError
		if !errors.As(err, &se) {
			// No answer: the server may have taken the message.
			return fmt.Errorf("forward: DATA: %w: %w", errInDoubt, err)
		}
		return fmt.Errorf("forward: DATA: %w", err)
	}
	// The message is accepted; a failed QUIT does not undo that.
	c.Quit()
	return nil
}

// connect dials the server and sets up TLS: the implicit handshake, or
// the greeting, EHLO and STARTTLS. ctx lives as long as the lease, and
// NewClientStartTLS heeds no context and waits with go-smtp's 5-minute
// defaults, which can be changed only once it returned: until the client
// is set up, the connection is closed when ctx ends or Options.Timeout
// runs out.
func (f *Forwarder) connect(ctx context.Context) (*smtp.Client, error) {
	d := &net.Dialer{Timeout: f.opts.Timeout}
	raw, err := d.DialContext(ctx, "tcp", f.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("forward: connect to %s: %w", f.opts.Addr, err)
	}
	conn := &boundedConn{Conn: raw, left: maxReceived}
	setup, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	cut := context.AfterFunc(setup, func() { raw.Close() })
	var c *smtp.Client
	what := "STARTTLS"
	if f.opts.Security == ImplicitTLS {
		what = "TLS"
		tc := tls.Client(conn, f.tlsConfig())
		if err = tc.HandshakeContext(setup); err == nil {
			c = smtp.NewClient(tc)
		}
	} else {
		c, err = smtp.NewClientStartTLS(conn, f.tlsConfig())
	}
	if !cut() {
		// Closed under the exchange, whatever it returned.
		err = context.Cause(setup)
	}
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("forward: %s with %s: %w", what, f.opts.Addr, err)
	}
	c.CommandTimeout, c.SubmissionTimeout = f.opts.Timeout, f.opts.Timeout
	return c, nil
}

// maxReceived bounds what one connection reads from the server. go-smtp
// bounds the length of a reply's lines but not their number, and gathers
// a multi-line reply whole: a server answering EHLO with continuation
// lines without end would grow memory until the command's timeout. One
// submission's replies take a few KiB and a TLS handshake rarely more
// than tens of KiB (crypto/tls accepts a certificate message of 256 KiB),
// so the bound is on the whole connection rather than on each reply: no
// write of the client's, a TLS key update's included, renews it.
const maxReceived = 1 << 20

// errTooMuchReceived is the read error of a connection past maxReceived.
var errTooMuchReceived = errors.New("the server sent more than 1 MiB on one connection")

// boundedConn is the server's connection, cut off after maxReceived
// bytes read. Only the client's goroutine reads it.
type boundedConn struct {
	net.Conn
	left int
}

func (c *boundedConn) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errTooMuchReceived
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.Conn.Read(p)
	c.left -= n
	return n, err
}

// errInDoubt marks a submission cut off after the end of its data, before
// the server's answer: sending the message again may send it twice.
var errInDoubt = errors.New("no answer to the end of data")
