package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/embeddedum/um"
)

// Mode is the delivery mode the engine claims for each mailbox it syncs
// (um.Service.ClaimDelivery).
const Mode = "imap-sync"

// Options tune an Engine. The zero value works.
type Options struct {
	// MinBackoff is the first wait before reconnecting after a failure;
	// each further failure doubles it up to MaxBackoff, and every wait is
	// drawn at random between half and all of it (jitter), so mailboxes
	// cut off together do not reconnect together. Default 1s and 5m.
	MinBackoff, MaxBackoff time.Duration
	// PollInterval is how often a worker checks the server for changes
	// when the server does not offer IDLE. Default 1m.
	PollInterval time.Duration
	// ProbeInterval is how often the one worker probing a server address
	// found unreachable retries it, instead of backing off; when it gets
	// through, the other workers of that address are woken (see the
	// package documentation, Reconnecting). Default MinBackoff.
	ProbeInterval time.Duration
	// MaxDials caps the logins in progress at once to one server address
	// (connect, TLS, greeting, authentication), so that a thousand workers
	// reconnecting together queue here rather than at the server's login
	// processes. Default 32.
	MaxDials int
	// DialTimeout bounds connecting and the TLS handshake. Default 30s.
	DialTimeout time.Duration
	// CommandTimeout bounds the wait for the answer to each command (and
	// for anything at all while idling, beyond PollInterval): a server
	// that falls silent is abandoned and retried after the backoff.
	// Default 1m.
	CommandTimeout time.Duration
	// MaxLine is the longest response line the engine accepts from the
	// server, and MaxLiteral the most literal bytes in one response; the
	// engine asks for nothing larger (flags, UIDs, one header field). A
	// server that sends more has its connection ended with an error
	// wrapping ErrServerFault. Default 1 MiB and 64 KiB.
	MaxLine, MaxLiteral int64
	// MaxAnswer is the most the engine reads in answer to one command
	// (and while idling), besides 1 KiB for each message a FETCH names:
	// go-imap keeps every response of a command, so a server that
	// streams LIST or SEARCH responses without end has its connection
	// ended, with an error wrapping ErrServerFault, once it sent this
	// much. The engine's largest answers (a search of the folder, the
	// account's folder list) take a few bytes per message or folder.
	// Default 2 MiB.
	MaxAnswer int64
	// Logger receives what has no caller to return to: server faults and
	// failed sessions at Warn, UIDVALIDITY changes at Info, each with the
	// attributes mailbox and remote (never a password or token). Nil
	// means slog.Default(). Status shows the last error of each mailbox
	// too.
	Logger *slog.Logger
	// Logf, when set, receives the same messages as Logger, formatted.
	// Superseded by Logger; kept for hosts that set it.
	Logf func(format string, args ...any)
	// LeaseTTL is the time to live of the lease that makes one node of a
	// cluster the owner of a mailbox's sync (on a store with um.Leaser):
	// when the owner dies or is cut from the store, another node takes the
	// mailbox over within LeaseTTL (and its first sync). The owner renews
	// it every third of LeaseTTL. Default 15s.
	LeaseTTL time.Duration
}

// Engine keeps voice mailboxes in sync with their users' accounts on a mail
// server, one worker (and one IMAP connection) per mailbox. It is safe for
// concurrent use.
type Engine struct {
	svc    *um.Service
	state  StateStore
	leaser um.Leaser // nil when the store has none: every node syncs
	opts   Options

	// afterAppend, when set by tests, runs after each successful APPEND;
	// returning true drops the connection as if the answer was lost.
	afterAppend func() bool
	// onFetched, when set by tests, runs for each message of the answer
	// to a UID FETCH, as soon as the worker has read it.
	onFetched func()
	// onUnsolicited, when set by tests, runs for each FETCH the server
	// sends of its own, on go-imap's goroutine for it.
	onUnsolicited func()

	// solo, when set by benchmarks before the first Add, gives every
	// worker its own backoff with nothing shared, for comparison.
	solo bool
	// sequential, set by benchmarks, waits for each command's answer
	// before the next is sent, for comparison with pipelining.
	sequential bool

	mu      sync.Mutex
	workers map[string]*worker
	closed  bool

	hostMu sync.Mutex
	hosts  map[string]*host // by lower-case Config.Addr
}

// New returns an engine that syncs mailboxes of svc.
//
// Where the state is kept depends on svc's store. A store that implements
// both um.Leaser and um.OutwardState (memstore, boltstore, pgstore) keeps
// it, so that the node that takes a mailbox over continues from it: state
// may then be nil, and a state that is not nil (a FileState of the files
// kept before) is only read from, once per mailbox whose state the store
// does not hold yet, to move it into the store (a FileState's file is then
// renamed to NAME.json.migrated). On any other store the engine keeps the
// state in state (a FileState, or the host's own StateStore), which is
// then required.
func New(svc *um.Service, state StateStore, opts *Options) (*Engine, error) {
	if svc == nil {
		return nil, fmt.Errorf("upstream: New: %w: nil service", um.ErrInvalid)
	}
	e := &Engine{svc: svc, state: state, workers: make(map[string]*worker), hosts: make(map[string]*host)}
	if opts != nil {
		e.opts = *opts
	}
	if l, ok := um.StoreAs[um.Leaser](svc.Store()); ok {
		e.leaser = l
		if ows, ok := um.StoreAs[um.OutwardState](svc.Store()); ok {
			e.state = &storeState{s: ows, from: state, log: e.logger()}
		}
	}
	if e.state == nil {
		return nil, fmt.Errorf("upstream: New: %w: the store keeps no outward state, and no StateStore was given", um.ErrInvalid)
	}
	if e.opts.MinBackoff <= 0 {
		e.opts.MinBackoff = time.Second
	}
	if e.opts.MaxBackoff <= 0 {
		e.opts.MaxBackoff = 5 * time.Minute
	}
	e.opts.MaxBackoff = max(e.opts.MaxBackoff, e.opts.MinBackoff)
	if e.opts.PollInterval <= 0 {
		e.opts.PollInterval = time.Minute
	}
	if e.opts.ProbeInterval <= 0 {
		e.opts.ProbeInterval = e.opts.MinBackoff
	}
	if e.opts.MaxDials <= 0 {
		e.opts.MaxDials = 32
	}
	if e.opts.DialTimeout <= 0 {
		e.opts.DialTimeout = 30 * time.Second
	}
	if e.opts.CommandTimeout <= 0 {
		e.opts.CommandTimeout = time.Minute
	}
	if e.opts.MaxLine <= 0 {
		e.opts.MaxLine = 1 << 20
	}
	if e.opts.MaxLiteral <= 0 {
		e.opts.MaxLiteral = 64 << 10
	}
	if e.opts.MaxAnswer <= 0 {
		e.opts.MaxAnswer = 2 << 20
	}
	e.opts.Logger = e.logger()
	if e.opts.LeaseTTL <= 0 {
		e.opts.LeaseTTL = 15 * time.Second
	}
	return e, nil
}

func (e *Engine) logger() *slog.Logger {
	if e.opts.Logger == nil {
		return slog.Default()
	}
	return e.opts.Logger
}

// Add starts syncing a mailbox. It claims the mailbox's delivery mode, so it
// fails with an error wrapping um.ErrModeConflict when the mailbox is
// forwarded by e-mail, and with um.ErrExists when the engine syncs it
// already. It does not wait for the server: Status tells how the worker
// fares. Messages the mailbox holds already are copied up at the first
// sync, with their heard state.
func (e *Engine) Add(ctx context.Context, cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	mb, err := e.svc.Mailbox(ctx, cfg.Mailbox)
	if err != nil {
		return fmt.Errorf("upstream: add %q: %w", cfg.Mailbox, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("upstream: add %q: %w", cfg.Mailbox, um.ErrClosed)
	}
	if _, ok := e.workers[cfg.Mailbox]; ok {
		return fmt.Errorf("upstream: add %q: %w: synced already", cfg.Mailbox, um.ErrExists)
	}
	if err := e.svc.ClaimDelivery(cfg.Mailbox, Mode); err != nil {
		return fmt.Errorf("upstream: add %q: %w", cfg.Mailbox, err)
	}
	w := newWorker(e, cfg, mb)
	e.workers[cfg.Mailbox] = w
	w.start()
	return nil
}

// Remove stops syncing a mailbox and releases its delivery mode. The state
// stays in the StateStore, so adding the mailbox again resumes where it
// stopped. It fails with um.ErrNotFound when the mailbox is not synced.
func (e *Engine) Remove(mailbox string) error {
	e.mu.Lock()
	w, ok := e.workers[mailbox]
	delete(e.workers, mailbox)
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("upstream: remove %q: %w", mailbox, um.ErrNotFound)
	}
	w.stop()
	e.svc.ReleaseDelivery(mailbox, Mode)
	return nil
}

// Status is the state of one mailbox's sync, for the host to show.
type Status struct {
	Mailbox string
	// Configured is false for a mailbox the engine does not sync; the other
	// fields are then zero.
	Configured bool
	// Connected is true while the worker holds an authenticated connection
	// with the folder selected.
	Connected bool
	// Idle and CondStore tell whether the server offers IDLE (changes
	// arrive at once; otherwise the worker polls) and CONDSTORE.
	Idle, CondStore bool
	// LastSync is when both sides were last known to be the same.
	LastSync time.Time
	// Lag is how long the oldest change not yet carried over has waited
	// (zero when in sync). It grows during an outage.
	Lag time.Duration
	// LastError is the last failure (nil after a successful sync).
	LastError error
	// Failures counts connection attempts and sessions that failed since
	// the last successful sync.
	Failures int
	// Messages is the number of voicemails associated with an upstream copy.
	Messages int
	// Owner is the cluster node that owns the mailbox's sync (holds its
	// lease) as this node last saw it, empty while it knows of none.
	// Owning tells whether it is this node: only the owner connects to the
	// server. On a node that does not own the mailbox, Connected is false
	// and Lag zero (the owner's Status tells them), and the other fields
	// are what this node saw when it last owned it. On a store without
	// um.Leaser every node owns the mailboxes it syncs.
	Owner  string
	Owning bool
}

// Status returns the sync state of mailbox.
func (e *Engine) Status(mailbox string) Status {
	e.mu.Lock()
	w := e.workers[mailbox]
	e.mu.Unlock()
	if w == nil {
		return Status{Mailbox: mailbox}
	}
	return w.status()
}

// Sync asks the worker of mailbox for a full comparison of both sides and
// waits until it has run. On a node that does not own the mailbox's sync
// it fails with an error wrapping um.ErrLeaseHeld that names the owner
// (just after Add it first waits until the lease is settled), and so it
// does when this node loses the lease meanwhile. A worker waiting to
// reconnect makes its attempt now if MinBackoff has passed since the last one, and Sync waits for it;
// otherwise, and when that attempt fails, Sync fails with an error
// wrapping ErrNotConnected and the attempt's error. It fails too when ctx
// is done first, and with um.ErrNotFound for a mailbox the engine does not
// sync.
func (e *Engine) Sync(ctx context.Context, mailbox string) error {
	e.mu.Lock()
	w := e.workers[mailbox]
	e.mu.Unlock()
	if w == nil {
		return fmt.Errorf("upstream: sync %q: %w", mailbox, um.ErrNotFound)
	}
	return w.syncNow(ctx)
}

// Close stops every worker. Changes not yet carried over are picked up at
// the next start, from the saved state. The mailboxes keep their delivery
// mode "imap-sync", so a restart (or another node) cannot forward them by
// e-mail meanwhile; Remove is what gives the mode up.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	ws := e.workers
	e.workers = make(map[string]*worker)
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.stop()
		}()
	}
	wg.Wait()
	return nil
}

// ErrNotConnected is wrapped by the error of Sync when the worker has no
// connection to the server (it is waiting to reconnect); the error of the
// last attempt is wrapped too.
var ErrNotConnected = errors.New("upstream: not connected")

func (e *Engine) logError(cfg Config, err error) {
	e.opts.Logger.Warn("upstream: session failed", "mailbox", cfg.Mailbox, "remote", cfg.Addr, "err", err)
	if e.opts.Logf != nil {
		e.opts.Logf("upstream: %s: %v", cfg.Mailbox, err)
	}
}

func (e *Engine) logInfo(cfg Config, msg string, args ...any) {
	e.opts.Logger.Info("upstream: "+msg, append([]any{"mailbox", cfg.Mailbox, "remote", cfg.Addr, "folder", cfg.Folder}, args...)...)
	if e.opts.Logf != nil {
		e.opts.Logf("upstream: %s: %s %v", cfg.Mailbox, msg, args)
	}
}
