package um

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
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
	// ErrBadAudio: the audio is not of the type it claims (for example a
	// WAV without a RIFF/WAVE header). Nothing was stored.
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
)

// Reserved folder names. INBOX is case-insensitive, as in IMAP.
const (
	Inbox = "INBOX"
	Trash = "Trash"
)

// Options tune a Service. The zero value works: no limits, deleted messages
// go to Trash and stay there, no MWI hook.
type Options struct {
	// MWI is called when a mailbox's lamp state changes. See MWIFunc.
	MWI MWIFunc
	// MaxMessages caps the messages a mailbox holds outside Trash. Zero
	// means no cap.
	MaxMessages int
	// MaxRecordedTime caps the summed duration of the voicemail a mailbox
	// holds outside Trash. Zero means no cap.
	MaxRecordedTime time.Duration
	// TrashRetention purges messages that have been in Trash longer than
	// this; the check runs every TrashRetention/10 (at most once a minute
	// and at least once an hour). Zero keeps them until deleted by hand.
	TrashRetention time.Duration
	// PurgeOnDelete makes Mailbox.Delete remove messages for good instead of
	// moving them to Trash.
	PurgeOnDelete bool
	// Node names this service in a cluster of services that share one
	// Store. Changes carry it, and the MWI hook runs only on the node where
	// a change was made, so a lamp is announced once. Default "local".
	Node string
	// Now returns the current time; time.Now when nil. For tests.
	Now func() time.Time
	// Logf receives errors that have no caller to return to (a failed
	// retention purge, a lost change feed). Default: dropped.
	Logf func(format string, args ...any)
}

// Service is the voicemail system of one PBX: the single source of truth
// that call control, IMAP sessions, sync workers and the MWI hook share. It is
// safe for concurrent use.
type Service struct {
	store Store
	opts  Options
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
	if s.opts.Logf == nil {
		s.opts.Logf = func(string, ...any) {}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.mwi = newMWIDispatcher(s)
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.mwi.run(s.ctx) }()
	if s.opts.TrashRetention > 0 {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.retain(s.ctx) }()
	}
	if w, ok := store.(Watcher); ok {
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
		s.cancel()
		s.wg.Wait()
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

// ClaimDelivery records that mailbox delivers its voicemail to mail clients
// in mode (for example "imap-sync" or "email-forward"). A mailbox has one
// mode: claiming a second fails with ErrModeConflict. Claiming the same mode
// again is a no-op.
func (s *Service) ClaimDelivery(mailbox, mode string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.modes[mailbox]; ok && cur != mode {
		return fmt.Errorf("%w: mailbox %q already uses %s, cannot also use %s", ErrModeConflict, mailbox, cur, mode)
	}
	s.modes[mailbox] = mode
	return nil
}

// ReleaseDelivery undoes ClaimDelivery for mode.
func (s *Service) ReleaseDelivery(mailbox, mode string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.modes[mailbox] == mode {
		delete(s.modes, mailbox)
	}
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
	if p, ok := s.store.(Publisher); ok {
		pc := c
		pc.Source = nil
		if err := p.Publish(context.WithoutCancel(ctx), pc); err != nil {
			s.opts.Logf("um: publish change of %q: %v", mailbox, err)
		}
	}
	if affectsMWI(events) {
		s.mwi.mark(mailbox, true)
	}
}

func (s *Service) watch(ctx context.Context, w Watcher) {
	for ctx.Err() == nil {
		err := w.Watch(ctx, s.opts.Node, func(c Change) {
			c.Source = nil
			s.subs.publish(c)
			switch {
			case c.Mailbox == "":
				s.mwi.markKnown()
			case affectsMWI(c.Events):
				s.mwi.mark(c.Mailbox, false)
			}
		})
		if ctx.Err() != nil {
			return
		}
		s.opts.Logf("um: change feed: %v", err)
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
			s.opts.Logf("um: trash retention: %v", err)
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
	if c, ok := s.store.(Counter); ok {
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
		}
	}
	return u, nil
}
