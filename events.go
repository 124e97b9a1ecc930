package um

import (
	"context"
	"reflect"
	"sync"
)

// EventKind says what an Event reports.
type EventKind uint8

// The kinds of events.
const (
	// EventAdded: Message arrived in Folder (deposit, append, move, copy).
	EventAdded EventKind = iota + 1
	// EventFlags: Message's flags or keywords changed; Message is as now.
	EventFlags
	// EventRemoved: the message Message.ID with Message.UID left Folder
	// (moved away or purged). Only ID, UID and Folder are set.
	EventRemoved
	// EventFolderCreated: Folder was created.
	EventFolderCreated
	// EventFolderDeleted: Folder was deleted with its messages. No
	// EventRemoved is sent for them.
	EventFolderDeleted
	// EventFolderRenamed: Folder is now called NewName.
	EventFolderRenamed
	// EventResync: what changed is not known (a change made by another node
	// was announced without detail, or a notification was lost). A
	// subscriber reloads whatever it holds of the mailbox. A resync with an
	// empty Change.Mailbox concerns every mailbox.
	EventResync
)

// Event is one part of a committed change.
type Event struct {
	Kind    EventKind
	Folder  string
	Message Message
	NewName string // EventFolderRenamed only
}

// Change is what one commit did to one mailbox, as a list of events in the
// order they happened.
type Change struct {
	Mailbox string
	// Node is the Options.Node of the service that committed the change.
	Node string
	// Source is the value the caller put in the context with WithSource,
	// nil otherwise. It is not carried between nodes.
	Source any
	Events []Event
}

type sourceKey struct{}

// WithSource returns a context that marks the changes made with it as coming
// from src (a comparable value, typically a pointer to an IMAP session or
// sync worker; values that cannot be compared never match),
// so that a Subscription with the same Source does not receive them.
func WithSource(ctx context.Context, src any) context.Context {
	return context.WithValue(ctx, sourceKey{}, src)
}

func sourceOf(ctx context.Context) any { return ctx.Value(sourceKey{}) }

// sameSource compares two sources without panicking on values of types
// that cannot be compared (a map or slice handed to WithSource): those
// never match, so echo suppression is lost but call control never panics.
func sameSource(a, b any) bool {
	if a == nil || b == nil {
		return false
	}
	ta := reflect.TypeOf(a)
	if ta != reflect.TypeOf(b) || !ta.Comparable() {
		return false
	}
	return a == b
}

// SubscribeOptions tune a Subscription. The zero value receives every change
// to the mailbox.
type SubscribeOptions struct {
	// Source, when not nil, drops the changes made with WithSource(ctx,
	// Source): a subscriber does not see its own changes echoed.
	Source any
	// MaxQueue bounds the changes held for a subscriber that does not keep
	// up; past it the queue is dropped and Next returns ErrOverflow. Default
	// 10000.
	MaxQueue int
	// Notify, when set, is called after each change queued for the
	// subscriber, besides the wake-up on C: a subscriber that waits on
	// something other than a channel (an IMAP session blocked reading
	// its client) is woken through it without a goroutine of its own. It
	// runs on the goroutine that committed the change, while the service's
	// subscriptions are locked: it must return at once and must not call
	// the Service.
	Notify func()
}

// Subscription receives the changes of one mailbox (or of all, for the
// empty name) in commit order. Publishing never blocks: each subscription
// has its own queue, and a wake-up on C tells that the queue is not empty.
type Subscription struct {
	svc     *Service
	mailbox string
	opts    SubscribeOptions
	c       chan struct{}

	mu       sync.Mutex
	queue    []Change
	overflow bool
	closed   bool
}

// C returns a channel that receives a value after changes were queued. One
// value may stand for many changes: call Next until it returns none.
func (s *Subscription) C() <-chan struct{} { return s.c }

// Mailbox returns the name of the subscribed mailbox, empty for all.
func (s *Subscription) Mailbox() string { return s.mailbox }

// Next returns the queued changes, oldest first, and empties the queue. After
// the queue overflowed it returns ErrOverflow once; the subscriber then
// reloads what it holds, as after EventResync.
func (s *Subscription) Next() ([]Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overflow {
		s.overflow = false
		s.queue = nil
		return nil, ErrOverflow
	}
	q := s.queue
	s.queue = nil
	return q, nil
}

// Close stops the subscription. It is safe to call more than once.
func (s *Subscription) Close() {
	s.svc.unsubscribe(s)
	s.mu.Lock()
	s.closed = true
	s.queue = nil
	s.mu.Unlock()
}

func (s *Subscription) push(c Change) {
	if sameSource(c.Source, s.opts.Source) {
		return
	}
	s.mu.Lock()
	if s.closed || s.overflow {
		s.mu.Unlock()
		return
	}
	if len(s.queue) >= s.opts.MaxQueue {
		s.overflow = true
		s.queue = nil
	} else {
		s.queue = append(s.queue, c)
	}
	s.mu.Unlock()
	select {
	case s.c <- struct{}{}:
	default:
	}
	if s.opts.Notify != nil {
		s.opts.Notify()
	}
}

// fanout holds the subscriptions of every mailbox.
type fanout struct {
	mu   sync.RWMutex
	subs map[string]map[*Subscription]struct{} // "" = every mailbox
}

func (f *fanout) add(s *Subscription) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.subs == nil {
		f.subs = make(map[string]map[*Subscription]struct{})
	}
	m := f.subs[s.mailbox]
	if m == nil {
		m = make(map[*Subscription]struct{})
		f.subs[s.mailbox] = m
	}
	m[s] = struct{}{}
}

func (f *fanout) remove(s *Subscription) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m := f.subs[s.mailbox]; m != nil {
		delete(m, s)
		if len(m) == 0 {
			delete(f.subs, s.mailbox)
		}
	}
}

func (f *fanout) publish(c Change) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if c.Mailbox == "" {
		for _, m := range f.subs {
			for s := range m {
				s.push(c)
			}
		}
		return
	}
	for s := range f.subs[c.Mailbox] {
		s.push(c)
	}
	for s := range f.subs[""] {
		s.push(c)
	}
}
