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
// Options.MWI. um calls it on one goroutine of its own, never under a lock,
// after the change is committed. For one mailbox the calls come in commit
// order; states in between may be merged, but the last call always carries
// the state after the last change. On a store of its own, um calls it only
// when the state differs from the one it last gave for the mailbox; on a
// store shared by a cluster (a Watcher), after every change made on this
// node that touches INBOX, since another node may have announced a state in
// between. Changes made on other nodes are announced there, not here.
//
// When the store fails to answer, um reads the state again a second later,
// backing off to 30 seconds while it stays down, so a lamp is never left
// stale by a passing error. A hook that blocks
// delays the next calls for every mailbox, never call control. The hook may
// call into um but must not call FlushMWI or Close, which wait for it. A
// panic in the hook is recovered and logged with Options.Logf.
type MWIFunc func(MWIState)

// MWI returns the current state of a mailbox, computed from the store, for
// example to answer a SUBSCRIBE or to refresh on a timer.
func (s *Service) MWI(ctx context.Context, mailbox string) (MWIState, error) {
	if c, ok := s.store.(Counter); ok {
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
// state is read from the store when the dispatcher gets to the mailbox, so a
// burst of changes costs one read and the final state always goes out.
type mwiDispatcher struct {
	svc *Service
	// shared is set when the store is shared by several nodes (a Watcher).
	shared bool
	wake   chan struct{}

	mu       sync.Mutex
	dirty    map[string]bool // mailbox -> announce (a change made on this node)
	order    []string        // dirty mailboxes in the order first marked
	last     map[string]MWIState
	busy     bool
	stopped  bool            // the run goroutine has returned
	failures map[string]uint // failed reads in a row, for the retry's backoff
	idleCond *sync.Cond
}

func newMWIDispatcher(s *Service) *mwiDispatcher {
	d := &mwiDispatcher{
		svc: s, wake: make(chan struct{}, 1),
		dirty: make(map[string]bool), last: make(map[string]MWIState),
		failures: make(map[string]uint),
	}
	d.idleCond = sync.NewCond(&d.mu)
	_, d.shared = s.store.(Watcher)
	return d
}

func (d *mwiDispatcher) mark(mailbox string, announce bool) {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return
	}
	prev, ok := d.dirty[mailbox]
	if !ok {
		d.order = append(d.order, mailbox)
	}
	d.dirty[mailbox] = prev || announce
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// markKnown marks, without announcing, every mailbox whose state the
// dispatcher holds: after a resync of all mailboxes those states may be
// stale. Mailboxes it never saw need nothing: their first change is
// announced anyway.
func (d *mwiDispatcher) markKnown() {
	d.mu.Lock()
	names := make([]string, 0, len(d.last))
	for name := range d.last {
		names = append(names, name)
	}
	d.mu.Unlock()
	for _, name := range names {
		d.mark(name, false)
	}
}

func (d *mwiDispatcher) run(ctx context.Context) {
	defer func() {
		// Nobody will drain marks made from now on: let flush return.
		d.mu.Lock()
		d.stopped = true
		d.order = nil
		clear(d.dirty)
		d.idleCond.Broadcast()
		d.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		}
		d.drain(ctx)
	}
}

func (d *mwiDispatcher) drain(ctx context.Context) {
	for {
		d.mu.Lock()
		if len(d.order) == 0 {
			d.busy = false
			d.idleCond.Broadcast()
			d.mu.Unlock()
			return
		}
		d.busy = true
		mailbox := d.order[0]
		d.order = d.order[1:]
		announce := d.dirty[mailbox]
		delete(d.dirty, mailbox)
		d.mu.Unlock()

		st, err := d.svc.MWI(ctx, mailbox)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrClosed) {
				// The lamp must not stay stale because a read failed (a
				// database connection lost): read again later, backing
				// off while the store stays down.
				d.mu.Lock()
				wait := min(mwiRetry<<min(d.failures[mailbox], 5), mwiMaxRetry)
				d.failures[mailbox]++
				first := d.failures[mailbox] == 1
				d.mu.Unlock()
				if first {
					d.svc.opts.Logf("%v; retrying", err)
				}
				time.AfterFunc(wait, func() { d.mark(mailbox, announce) })
			}
			continue
		}
		d.mu.Lock()
		delete(d.failures, mailbox)
		prev, seen := d.last[mailbox]
		d.last[mailbox] = st
		d.mu.Unlock()
		// On a shared store another node may have announced a state this
		// node has not heard of yet, so an unchanged state here does not
		// mean an unchanged lamp: every local change is announced.
		if announce && (d.shared || !seen || prev != st) {
			d.call(st)
		}
	}
}

// mwiRetry is how long the dispatcher waits to read a state again after the
// store failed to answer; it doubles with each failure up to mwiMaxRetry.
const (
	mwiRetry    = time.Second
	mwiMaxRetry = 30 * time.Second
)

func (d *mwiDispatcher) call(st MWIState) {
	if d.svc.opts.MWI == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			d.svc.opts.Logf("um: MWI hook panicked for %q: %v", st.Mailbox, r)
		}
	}()
	d.svc.opts.MWI(st)
}

// flush waits until the dispatcher has run the hook for every mark made so
// far. Only the run goroutine calls the hook, which keeps calls for one
// mailbox in order.
func (d *mwiDispatcher) flush() {
	d.mu.Lock()
	for !d.stopped && (d.busy || len(d.order) > 0) {
		d.idleCond.Wait()
	}
	d.mu.Unlock()
}

// FlushMWI waits until the MWI hook has been called for every change
// committed before it was called. Tests and shutdown use it.
func (s *Service) FlushMWI() { s.mwi.flush() }
