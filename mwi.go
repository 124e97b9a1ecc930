package um

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// MWIState is what a message-waiting indicator shows for one mailbox. It
// counts voicemail in INBOX without \Deleted: New are unheard, Old heard,
// and the urgent ones among each are counted again apart.
type MWIState struct {
	Mailbox   string
	New       int
	Old       int
	UrgentNew int
	UrgentOld int
	// Node is, in a state given to the MWI hook, the Options.Node of the
	// service where the change shown was made: this node's own name for its
	// own changes (also when they merged with other nodes' changes) and for
	// the announcement at start (Options.AnnounceMWI), another node's for
	// its changes, and empty when um rereads a state after its change feed
	// was lost, not knowing who changed it. States read with Service.MWI
	// and stores' Counter leave it empty.
	Node string
}

// sameCounts reports whether s and o show the same counts, whoever made them.
func (s MWIState) sameCounts(o MWIState) bool {
	s.Node, o.Node = "", ""
	return s == o
}

// Waiting reports whether the lamp is lit: unheard messages exist.
func (s MWIState) Waiting() bool { return s.New > 0 }

// String returns the counts as RFC 3842 writes them: "2/8 (1/0)".
func (s MWIState) String() string {
	return fmt.Sprintf("%d/%d (%d/%d)", s.New, s.Old, s.UrgentNew, s.UrgentOld)
}

// MessageSummary returns an RFC 3842 application/simple-message-summary
// body for s, for the body of a SIP NOTIFY. account is the Message-Account
// URI (for example "sip:1001@pbx.example.com"); it is left out when empty.
func (s MWIState) MessageSummary(account string) []byte {
	var b strings.Builder
	if s.Waiting() {
		b.WriteString("Messages-Waiting: yes\r\n")
	} else {
		b.WriteString("Messages-Waiting: no\r\n")
	}
	if account != "" {
		fmt.Fprintf(&b, "Message-Account: %s\r\n", account)
	}
	fmt.Fprintf(&b, "Voice-Message: %s\r\n", s)
	return []byte(b.String())
}

// MWIFunc is the host's hook for message-waiting changes, set in
// Options.MWI. um calls it after the change is committed, never under a
// lock, on goroutines of its own: for one mailbox one call at a time, in
// commit order; states in between may be merged, but the last call always
// carries the state after the last change. Calls for different mailboxes run
// at the same time on up to Options.MWIWorkers goroutines, so a hook that
// blocks on one mailbox (a NOTIFY to a dead phone) delays only that
// mailbox's next calls; when every worker is blocked, the other mailboxes
// wait for one to return. Call control never waits for the hook.
//
// The hook hears every lamp change of every mailbox, made on this node or,
// on a store shared by a cluster (a Watcher), on another node: the phone's
// SIP subscription may be held by any node. MWIState.Node says where the
// change was made; a host that wants each change announced only by the node
// that made it ignores the calls whose Node is not Service.Node(). um calls
// the hook when the state differs from the one it last gave for the mailbox,
// and, on a shared store, after every change made on this node that touches
// INBOX (another node may have announced a state in between), and once for
// every mailbox at start with Options.AnnounceMWI.
//
// When the store fails to answer, um reads the state again a second later,
// backing off to 30 seconds while it stays down, so a lamp is never left
// stale by a passing error. The hook may call into um but must not call
// FlushMWI or Close, which wait for it. A panic in the hook is recovered and
// logged at Error with Options.Logger.
type MWIFunc func(MWIState)

// Observer is told what um does, for metrics. Its methods are called
// synchronously, on the goroutine that did the work, and must return
// quickly without calling back into um.
type Observer interface {
	// Deposited is called after a deposit into mailbox was committed, with
	// the stored message.
	Deposited(mailbox string, m Message)
	// MWICalled is called after each MWI hook call (or, without a hook,
	// where one would have been called) with the state it was given and
	// how long the hook took.
	MWICalled(st MWIState, took time.Duration)
}

type nopObserver struct{}

func (nopObserver) Deposited(string, Message)         {}
func (nopObserver) MWICalled(MWIState, time.Duration) {}

// MWI returns the current state of a mailbox, computed from the store, for
// example to answer a SUBSCRIBE or to refresh on a timer.
func (s *Service) MWI(ctx context.Context, mailbox string) (MWIState, error) {
	if c := s.caps.counter; c != nil {
		st, err := c.CountMWI(ctx, mailbox)
		if err != nil {
			return MWIState{}, fmt.Errorf("um: mwi of %q: %w", mailbox, err)
		}
		st.Mailbox = mailbox
		return st, nil
	}
	return CountMWI(ctx, s.store, mailbox)
}

// CountMWI computes the MWI state of a mailbox by listing its INBOX: the
// fallback for stores without Counter, and the reference Counter
// implementations are tested against.
func CountMWI(ctx context.Context, store Store, mailbox string) (MWIState, error) {
	msgs, err := store.List(ctx, mailbox, Inbox)
	if err != nil {
		return MWIState{}, fmt.Errorf("um: mwi of %q: %w", mailbox, err)
	}
	st := MWIState{Mailbox: mailbox}
	for i := range msgs {
		m := &msgs[i]
		if m.Raw || m.Flags.Has(FlagDeleted) {
			continue
		}
		switch {
		case m.Heard() && m.IsUrgent():
			st.Old++
			st.UrgentOld++
		case m.Heard():
			st.Old++
		case m.IsUrgent():
			st.New++
			st.UrgentNew++
		default:
			st.New++
		}
	}
	return st, nil
}

func affectsMWI(events []Event) bool {
	for _, e := range events {
		if e.Folder == Inbox || e.Kind == EventResync {
			return true
		}
	}
	return false
}

// mwiDispatcher runs the MWI hook. Marks are merged per mailbox, and the
// state is read from the store when a worker gets to the mailbox, so a burst
// of changes costs one read and the final state always goes out. A mailbox
// is in the hands of at most one worker at a time, which keeps its calls in
// order; a mailbox marked while a worker holds it is queued again when that
// worker is done with it.
type mwiDispatcher struct {
	svc *Service
	// shared is set when the store is shared by several nodes (a Watcher).
	shared  bool
	workers int
	wg      sync.WaitGroup // the worker goroutines

	mu       sync.Mutex
	pending  map[string]mwiMark // marked mailboxes not yet taken by a worker
	queue    []string           // pending mailboxes no worker holds, in the order first marked
	running  map[string]bool    // mailboxes a worker holds
	active   int                // worker goroutines
	last     map[string]MWIState
	failures map[string]uint // failed reads in a row, for the retry's backoff
	stopped  bool
	idleCond *sync.Cond
}

// mwiMark is what the marks of a mailbox since its last read add up to.
type mwiMark struct {
	// node is where the changes were made: this node when any of them
	// was, else the node of the latest.
	node string
	// force calls the hook even when the counts did not change.
	force bool
}

func newMWIDispatcher(s *Service) *mwiDispatcher {
	d := &mwiDispatcher{
		svc: s, workers: s.opts.MWIWorkers,
		pending: make(map[string]mwiMark), running: make(map[string]bool),
		last: make(map[string]MWIState), failures: make(map[string]uint),
	}
	if d.workers <= 0 {
		d.workers = 32
	}
	d.idleCond = sync.NewCond(&d.mu)
	d.shared = s.caps.watcher != nil
	return d
}

// mark asks for the mailbox's state to be read and announced, for a change
// made on node ("" when not known).
func (d *mwiDispatcher) mark(mailbox, node string) {
	// On a shared store another node may have announced a state this node
	// has not heard of yet, so an unchanged state here does not mean an
	// unchanged lamp: every local change is announced.
	local := node == d.svc.opts.Node
	d.add(mailbox, mwiMark{node: node, force: local && d.shared})
}

func (d *mwiDispatcher) add(mailbox string, m mwiMark) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return
	}
	prev, ok := d.pending[mailbox]
	if ok {
		m.force = m.force || prev.force
		// This node's own change wins, so a host announcing only its own
		// sees it; a reread for no known change ("") names nobody new.
		if prev.node == d.svc.opts.Node || m.node == "" {
			m.node = prev.node
		}
	} else if !d.running[mailbox] {
		d.queue = append(d.queue, mailbox)
	}
	d.pending[mailbox] = m
	if len(d.queue) > 0 && d.active < d.workers {
		d.active++
		d.wg.Add(1)
		go d.work()
	}
}

// markKnown marks every mailbox whose state the dispatcher holds, after a
// resync of all mailboxes: those states may be stale. A mailbox it never
// read needs nothing: this node has announced nothing for it to correct,
// and its next change is announced anyway (Options.AnnounceMWI covers a
// start).
func (d *mwiDispatcher) markKnown() {
	d.mu.Lock()
	names := make([]string, 0, len(d.last))
	for name := range d.last {
		names = append(names, name)
	}
	d.mu.Unlock()
	for _, name := range names {
		d.add(name, mwiMark{})
	}
}

// announceAll gives every mailbox's state to the hook once, for
// Options.AnnounceMWI.
func (d *mwiDispatcher) announceAll(ctx context.Context) {
	names, err := d.svc.store.Mailboxes(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.svc.log.Error("um: list mailboxes to announce their lamps", "err", err)
		}
		return
	}
	for _, name := range names {
		d.add(name, mwiMark{node: d.svc.opts.Node, force: true})
	}
}

func (d *mwiDispatcher) work() {
	defer d.wg.Done()
	ctx := d.svc.ctx
	for {
		d.mu.Lock()
		if d.stopped || len(d.queue) == 0 {
			d.active--
			d.idleCond.Broadcast()
			d.mu.Unlock()
			return
		}
		mailbox := d.queue[0]
		d.queue = d.queue[1:]
		m := d.pending[mailbox]
		delete(d.pending, mailbox)
		d.running[mailbox] = true
		d.mu.Unlock()

		d.read(ctx, mailbox, m)

		d.mu.Lock()
		delete(d.running, mailbox)
		if _, again := d.pending[mailbox]; again && !d.stopped {
			d.queue = append(d.queue, mailbox)
		}
		d.idleCond.Broadcast()
		d.mu.Unlock()
	}
}

// read reads the state of mailbox and calls the hook when m asks for it.
func (d *mwiDispatcher) read(ctx context.Context, mailbox string, m mwiMark) {
	st, err := d.svc.MWI(ctx, mailbox)
	if err != nil {
		if ctx.Err() == nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrClosed) {
			// The lamp must not stay stale because a read failed (a
			// database connection lost): read again later, backing off
			// while the store stays down.
			d.mu.Lock()
			wait := min(mwiRetry<<min(d.failures[mailbox], 5), mwiMaxRetry)
			d.failures[mailbox]++
			first := d.failures[mailbox] == 1
			d.mu.Unlock()
			if first {
				d.svc.log.Warn("um: read lamp state; retrying", "mailbox", mailbox, "err", err)
			}
			time.AfterFunc(wait, func() { d.add(mailbox, m) })
		}
		return
	}
	d.mu.Lock()
	delete(d.failures, mailbox)
	prev, seen := d.last[mailbox]
	d.last[mailbox] = st
	d.mu.Unlock()
	if m.force || !seen || !prev.sameCounts(st) {
		st.Node = m.node
		d.call(st)
	}
}

// mwiRetry is how long the dispatcher waits to read a state again after the
// store failed to answer; it doubles with each failure up to mwiMaxRetry.
const (
	mwiRetry    = time.Second
	mwiMaxRetry = 30 * time.Second
)

func (d *mwiDispatcher) call(st MWIState) {
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			d.svc.log.Error("um: MWI hook panicked", "mailbox", st.Mailbox, "panic", r)
		}
		d.svc.opts.Observer.MWICalled(st, time.Since(start))
	}()
	if d.svc.opts.MWI != nil {
		d.svc.opts.MWI(st)
	}
}

// flush waits until no mailbox is marked or held by a worker.
func (d *mwiDispatcher) flush() {
	d.mu.Lock()
	for !d.stopped && (len(d.queue) > 0 || len(d.running) > 0) {
		d.idleCond.Wait()
	}
	d.mu.Unlock()
}

// stop drops what is marked and makes later marks no-ops; wait then waits
// for the workers to return, once the service's context is canceled (a
// worker may be in a store read).
func (d *mwiDispatcher) stop() {
	d.mu.Lock()
	d.stopped = true
	d.queue = nil
	clear(d.pending)
	d.idleCond.Broadcast()
	d.mu.Unlock()
}

func (d *mwiDispatcher) wait() { d.wg.Wait() }

// FlushMWI waits until the MWI hook has been called for every change
// committed before it was called, and no call is in progress: a hook that
// blocks keeps FlushMWI waiting. Tests and shutdown use it.
func (s *Service) FlushMWI() { s.mwi.flush() }
