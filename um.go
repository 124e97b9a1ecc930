package um

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/embeddedum/um/internal/slogf"
)

// Errors callers tell apart with errors.Is. Errors um returns wrap them with
// detail; every message starts with "um: " or the store package's name.
var (
	// ErrNotFound: the mailbox, folder or message does not exist.
	ErrNotFound = errors.New("um: not found")
	// ErrExists: a mailbox or folder of that name exists already.
	ErrExists = errors.New("um: already exists")
	// ErrMailboxFull: a deposit or append would pass Options.MaxMessages or
	// Options.MaxRecordedTime. Nothing was stored.
	ErrMailboxFull = errors.New("um: mailbox full")
	// ErrReserved: INBOX and Trash cannot be created, renamed or deleted.
	ErrReserved = errors.New("um: reserved folder")
	// ErrInvalid: an argument is malformed (an empty name, a nil reader, a
	// negative duration). Nothing was changed.
	ErrInvalid = errors.New("um: invalid argument")
	// ErrBadAudio: the audio's type is not an audio media type, or the
	// audio is not of the type it claims (Ogg bytes labelled audio/wav, a
	// WAV without a RIFF/WAVE header or shorter than its header says).
	// Nothing was stored.
	ErrBadAudio = errors.New("um: bad audio")
	// ErrNotVoice: an operation for voicemail was asked of an e-mail a mail
	// client appended, or an e-mail was offered where only voicemail goes.
	ErrNotVoice = errors.New("um: not a voice message")
	// ErrOverflow: a Subscription's queue overflowed; changes were dropped
	// and the subscriber must reload.
	ErrOverflow = errors.New("um: subscription overflowed")
	// ErrClosed: the Store was closed. (A closed Service keeps serving
	// calls on its store; only its background work stops.)
	ErrClosed = errors.New("um: closed")
	// ErrModeConflict: a mailbox cannot both sync to a mail server and be
	// forwarded by e-mail.
	ErrModeConflict = errors.New("um: delivery mode conflict")
	// ErrContentSize: the content handed to an Email is shorter or longer
	// than Message.Size. The bytes already produced are wrong and must be
	// discarded. A short content also matches io.ErrUnexpectedEOF.
	ErrContentSize = errors.New("um: content size differs from message size")
	// ErrLimit: an implementation limit was reached, one that bounds what
	// a client can make the store and every session hold: the folders of a
	// voice mailbox (Options.MaxFolders, in CreateFolder), and the IMAP
	// server's limits on keywords (their length, how many a folder takes
	// and a message holds). Nothing was changed. The error is a
	// *LimitError, which says the limit.
	ErrLimit = errors.New("um: limit reached")
)

// DefaultMaxFolders is the user folders a voice mailbox holds when
// Options.MaxFolders is zero: plenty for voicemail, which lives in INBOX and
// Trash, few enough that a client creating folders in a loop cannot make
// every LIST long, and well inside MaxSubscriptions, so that every folder
// can be subscribed.
const DefaultMaxFolders = 500

// LimitError is the error of a request refused by an implementation limit.
// It wraps ErrLimit, and its message says the limit.
type LimitError struct {
	What string // what is counted, e.g. "folders in a voice mailbox"
	Max  int    // the most allowed
}

// Error says the limit: "um: limit reached: at most 500 folders in a voice
// mailbox".
func (e *LimitError) Error() string {
	return fmt.Sprintf("%v: at most %d %s", ErrLimit, e.Max, e.What)
}

// Unwrap returns ErrLimit.
func (e *LimitError) Unwrap() error { return ErrLimit }

// Reserved folder names. INBOX is case-insensitive, as in IMAP.
const (
	Inbox = "INBOX"
	Trash = "Trash"
)

// Options tune a Service. The zero value works: no limits on what a mailbox
// records, DefaultMaxFolders folders per mailbox, deleted messages go to
// Trash and stay there, no MWI hook.
type Options struct {
	// MWI is called when a mailbox's lamp state changes. See MWIFunc.
	MWI MWIFunc
	// MaxMessages caps the messages a mailbox holds outside Trash. Zero
	// means no cap.
	MaxMessages int
	// MaxRecordedTime caps the summed duration of the voicemail a mailbox
	// holds outside Trash. Zero means no cap.
	MaxRecordedTime time.Duration
	// MaxFolders caps the user folders (those besides INBOX and Trash) a
	// mailbox holds: CreateFolder past it fails with a *LimitError
	// (ErrLimit). Zero means DefaultMaxFolders; negative means no cap. It
	// is checked under the mailbox lock of this node, so nodes of a
	// cluster creating folders in one mailbox at once may pass it by a
	// folder each.
	MaxFolders int
	// TrashRetention purges messages that have been in Trash longer than
	// this; the check runs every TrashRetention/10 (at most once a minute
	// and at least once an hour). Zero keeps them until deleted by hand.
	TrashRetention time.Duration
	// PurgeOnDelete makes Mailbox.Delete remove messages for good instead of
	// moving them to Trash.
	PurgeOnDelete bool
	// Node names this service in a cluster of services that share one
	// Store. Changes carry it, and MWIState.Node tells the MWI hook where a
	// change was made. Default "local".
	Node string
	// Render is how voicemail looks as e-mail wherever it is rendered
	// through Service.RenderEmail (the IMAP server, the sync engine,
	// forwarding): the time zone, the wording, the mail domain. Fields the
	// caller of RenderEmail sets win. Keep it fixed: IMAP clients cache
	// what a message looked like.
	Render RenderOptions
	// TextsFor, when set, picks the wording for a mailbox (its user's
	// language); a nil result falls back to Render.Texts, then English.
	TextsFor func(mailbox string) *Texts
	// AnnounceMWI makes New call the MWI hook once for every mailbox, with
	// its current state, whether or not it changed: phones may have missed
	// changes while this node was down.
	AnnounceMWI bool
	// MWIWorkers bounds the MWI hook calls in progress at once, each for a
	// different mailbox. Default 32. See MWIFunc.
	MWIWorkers int
	// Observer, when set, is told of deposits and MWI hook calls, for
	// metrics. See Observer.
	Observer Observer
	// Now returns the current time; time.Now when nil. For tests.
	Now func() time.Time
	// Logger receives what has no caller to return to: store faults (a
	// failed retention purge, a change that could not be published) at
	// Error, a lost change feed or an MWI read that will be retried at Warn,
	// with the attribute mailbox where one is concerned. Nil means Logf when
	// that is set, else slog.Default().
	Logger *slog.Logger
	// Logf is superseded by Logger and kept for hosts written before it:
	// when Logger is nil, each record goes to Logf as one line of text.
	Logf func(format string, args ...any)
}

// Service is the voicemail system of one PBX: the single source of truth
// that call control, IMAP sessions, sync workers and the MWI hook share. It is
// safe for concurrent use.
type Service struct {
	store Store
	caps  storeCaps // immutable after New
	opts  Options
	log   *slog.Logger
	subs  fanout
	mwi   *mwiDispatcher

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	closeOnce sync.Once

	mu    sync.Mutex
	locks map[string]*sync.Mutex // per mailbox: commit and publish in order
	modes map[string]string      // per mailbox: delivery mode claimed

	seen seenMarks // delete-time \Seen marks (habits.go)
}

// New returns a Service over store and starts its background work (MWI
// dispatch, Trash retention, the change feed of a shared store). Close stops
// it; the store stays open and is the caller's to close.
func New(store Store, opts *Options) (*Service, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: nil store", ErrInvalid)
	}
	s := &Service{store: store, locks: make(map[string]*sync.Mutex), modes: make(map[string]string)}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.Node == "" {
		s.opts.Node = "local"
	}
	if s.opts.Now == nil {
		s.opts.Now = time.Now
	}
	s.log = slogf.Logger(s.opts.Logger, s.opts.Logf)
	if s.opts.Observer == nil {
		s.opts.Observer = nopObserver{}
	}
	s.caps = findCaps(store)
	chain, found, missing := describeCaps(store)
	s.log.Info("um: store capabilities", "store", chain, "found", found, "missing", missing)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mwi = newMWIDispatcher(s)
	if s.opts.AnnounceMWI {
		// Marking only queues the mailboxes: the reads and calls run on the
		// dispatcher's workers, and FlushMWI waits for them.
		s.mwi.announceAll(s.ctx)
	}
	if s.opts.TrashRetention > 0 {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.retain(s.ctx) }()
	}
	if w := s.caps.watcher; w != nil {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.watch(s.ctx, w) }()
	}
	return s, nil
}

// Close stops the background work after the MWI hook has been given the final
// state of every change already committed. It does not close the store, and
// it is safe to call more than once. Changes committed after Close still
// reach subscribers, but no longer the MWI hook.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		s.mwi.flush()
		s.mwi.stop()
		s.cancel()
		s.wg.Wait()
		s.mwi.wait()
	})
	return nil
}

// Store returns the store the service was created with. Writes made on it
// directly bypass the service: no change is published and no lamp updated.
// Use it to read, or for maintenance while no Service runs.
func (s *Service) Store() Store { return s.store }

// Node returns Options.Node.
func (s *Service) Node() string { return s.opts.Node }

// CreateMailbox provisions a voice mailbox with INBOX and Trash. It fails with
// ErrExists when the mailbox exists.
func (s *Service) CreateMailbox(ctx context.Context, name string) (*Mailbox, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if err := s.store.CreateMailbox(ctx, name); err != nil {
		return nil, fmt.Errorf("um: create mailbox %q: %w", name, err)
	}
	return &Mailbox{svc: s, name: name}, nil
}

// EnsureMailbox returns the mailbox, creating it when it does not exist.
func (s *Service) EnsureMailbox(ctx context.Context, name string) (*Mailbox, error) {
	mb, err := s.CreateMailbox(ctx, name)
	if errors.Is(err, ErrExists) {
		return s.Mailbox(ctx, name)
	}
	return mb, err
}

// Mailbox returns a handle on an existing mailbox, or ErrNotFound.
func (s *Service) Mailbox(ctx context.Context, name string) (*Mailbox, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	if _, err := s.store.Folders(ctx, name); err != nil {
		return nil, fmt.Errorf("um: mailbox %q: %w", name, err)
	}
	return &Mailbox{svc: s, name: name}, nil
}

// Mailboxes lists the names of all mailboxes.
func (s *Service) Mailboxes(ctx context.Context) ([]string, error) {
	return s.store.Mailboxes(ctx)
}

// Subscribe returns a subscription to the changes of mailbox, or of every
// mailbox when mailbox is empty. Close it when done.
func (s *Service) Subscribe(mailbox string, opts SubscribeOptions) *Subscription {
	if opts.MaxQueue <= 0 {
		opts.MaxQueue = 10000
	}
	sub := &Subscription{svc: s, mailbox: mailbox, opts: opts, c: make(chan struct{}, 1)}
	s.subs.add(sub)
	return sub
}

func (s *Service) unsubscribe(sub *Subscription) { s.subs.remove(sub) }

// deliveryTimeout bounds the store calls of ClaimDelivery and
// ReleaseDelivery, which take no context.
const deliveryTimeout = 30 * time.Second

// ClaimDelivery records that mailbox delivers its voicemail to mail clients
// in mode (for example "imap-sync" or "email-forward"), claimed by this
// node (Options.Node). A mailbox has one mode: claiming a second fails with
// an error wrapping ErrModeConflict (a *ModeConflictError naming the mode
// that holds). Claiming the mode the mailbox has is no error.
//
// On a store that implements DeliveryModes (memstore, boltstore, pgstore)
// the claim is kept by the store: it holds across the nodes of a cluster
// and across restarts, until ReleaseDelivery, and a mailbox that does not
// exist gives ErrNotFound. Otherwise it is kept in this Service's memory.
func (s *Service) ClaimDelivery(mailbox, mode string) error {
	if m := s.caps.modes; m != nil {
		ctx, cancel := context.WithTimeout(context.Background(), deliveryTimeout)
		defer cancel()
		if err := m.ClaimDelivery(ctx, mailbox, mode, s.opts.Node); err != nil {
			return fmt.Errorf("um: claim delivery mode %s for %q: %w", mode, mailbox, err)
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.modes[mailbox]; ok && cur != mode {
		return &ModeConflictError{Mailbox: mailbox, Mode: mode, Held: cur, Nodes: []string{s.opts.Node}}
	}
	s.modes[mailbox] = mode
	return nil
}

// ReleaseDelivery ends this node's claim of mode on mailbox. Call it when
// the mailbox stops using mode (its configuration changed), not merely
// because the process stops: a claim the store keeps is meant to outlive
// the process. A store error is logged (Options.Logger, at Error).
func (s *Service) ReleaseDelivery(mailbox, mode string) {
	if m := s.caps.modes; m != nil {
		ctx, cancel := context.WithTimeout(context.Background(), deliveryTimeout)
		defer cancel()
		if err := m.ReleaseDelivery(ctx, mailbox, mode, s.opts.Node); err != nil {
			s.log.Error("um: release delivery mode", "mailbox", mailbox, "mode", mode, "err", err)
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.modes[mailbox] == mode {
		delete(s.modes, mailbox)
	}
}

// DeliveryMode returns the delivery mode mailbox has and the nodes that
// hold it ("" when it has none).
func (s *Service) DeliveryMode(ctx context.Context, mailbox string) (mode string, nodes []string, err error) {
	if m := s.caps.modes; m != nil {
		mode, nodes, err = m.DeliveryMode(ctx, mailbox)
		if err != nil {
			return "", nil, fmt.Errorf("um: delivery mode of %q: %w", mailbox, err)
		}
		return mode, nodes, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.modes[mailbox]; ok {
		return cur, []string{s.opts.Node}, nil
	}
	return "", nil, nil
}

func (s *Service) lock(mailbox string) func() {
	s.mu.Lock()
	l := s.locks[mailbox]
	if l == nil {
		l = new(sync.Mutex)
		s.locks[mailbox] = l
	}
	s.mu.Unlock()
	l.Lock()
	return l.Unlock
}

// commit publishes a committed change: to local subscribers, to other nodes
// when the store is shared, and to the MWI dispatcher. Callers hold the
// mailbox lock, so changes of one mailbox are published in commit order.
func (s *Service) commit(ctx context.Context, mailbox string, events []Event) {
	if len(events) == 0 {
		return
	}
	c := Change{Mailbox: mailbox, Node: s.opts.Node, Source: sourceOf(ctx), Events: events}
	s.subs.publish(c)
	if p := s.caps.publisher; p != nil {
		pc := c
		pc.Source = nil
		if err := p.Publish(context.WithoutCancel(ctx), pc); err != nil {
			s.log.Error("um: publish change", "mailbox", mailbox, "err", err)
		}
	}
	if affectsMWI(events) {
		s.mwi.mark(mailbox, s.opts.Node)
	}
}

func (s *Service) watch(ctx context.Context, w Watcher) {
	for ctx.Err() == nil {
		err := w.Watch(ctx, s.opts.Node, func(c Change) {
			c.Source = nil
			// The lamp is marked before subscribers hear of the change, so
			// one that has seen it knows FlushMWI covers it.
			switch {
			case c.Mailbox == "":
				s.mwi.markKnown()
			case affectsMWI(c.Events):
				s.mwi.mark(c.Mailbox, c.Node)
			}
			s.subs.publish(c)
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("um: change feed lost; watching again in 1s", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (s *Service) retain(ctx context.Context) {
	every := s.opts.TrashRetention / 10
	every = max(every, time.Minute)
	every = min(every, time.Hour)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := s.PurgeTrash(ctx, s.opts.Now().Add(-s.opts.TrashRetention)); err != nil && ctx.Err() == nil {
			s.log.Error("um: trash retention", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// PurgeTrash removes for good every message that arrived in a Trash folder
// before cutoff, in every mailbox, and returns how many it removed.
func (s *Service) PurgeTrash(ctx context.Context, cutoff time.Time) (int, error) {
	names, err := s.store.Mailboxes(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, name := range names {
		mb := &Mailbox{svc: s, name: name}
		msgs, err := mb.List(ctx, Trash)
		if err != nil {
			return n, err
		}
		var old []Message
		for _, m := range msgs {
			if m.Added.Before(cutoff) {
				old = append(old, m)
			}
		}
		if len(old) == 0 {
			continue
		}
		if err := mb.purge(ctx, messageIDs(old)); err != nil {
			return n, err
		}
		n += len(old)
	}
	return n, nil
}

func validName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty mailbox name", ErrInvalid)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: mailbox name %q has control characters", ErrInvalid, name)
		}
	}
	return nil
}

func (s *Service) usage(ctx context.Context, mailbox string) (Usage, error) {
	if c := s.caps.counter; c != nil {
		u, err := c.Usage(ctx, mailbox)
		if err != nil {
			return Usage{}, fmt.Errorf("um: usage of %q: %w", mailbox, err)
		}
		return u, nil
	}
	return CountUsage(ctx, s.store, mailbox)
}

// CountUsage computes a mailbox's Usage by listing its folders: the fallback
// for stores without Counter.
func CountUsage(ctx context.Context, store Store, mailbox string) (Usage, error) {
	fs, err := store.Folders(ctx, mailbox)
	if err != nil {
		return Usage{}, fmt.Errorf("um: usage of %q: %w", mailbox, err)
	}
	var u Usage
	for _, f := range fs {
		if f.Name == Trash {
			continue
		}
		msgs, err := store.List(ctx, mailbox, f.Name)
		if err != nil {
			return Usage{}, fmt.Errorf("um: usage of %q: %w", mailbox, err)
		}
		u.Messages += len(msgs)
		for _, m := range msgs {
			u.Recorded += m.Duration
			u.Size += m.Size
		}
	}
	return u, nil
}
