package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	umwav "github.com/embeddedum/um/wav"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/testwait"
	"github.com/embeddedum/um/storage/pgstore"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// node is one cluster node: a Store with its own pool and a Service on it.
type node struct {
	name  string
	store *pgstore.Store
	svc   *um.Service

	mu    sync.Mutex
	lamps []um.MWIState // every MWI hook call, in order
}

func (n *node) hookCalls() []um.MWIState {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]um.MWIState(nil), n.lamps...)
}

// startNode opens a Store on dsn and a Service on it, both named name, and
// waits until the node's change feed listens.
func startNode(t testing.TB, dsn, name string) *node {
	t.Helper()
	n := &node{name: name, store: openStore(t, dsn, &pgstore.Options{Node: name})}
	svc, err := um.New(n.store, &um.Options{Node: name, MWI: func(st um.MWIState) {
		n.mu.Lock()
		n.lamps = append(n.lamps, st)
		n.mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	n.svc = svc
	t.Cleanup(func() { svc.Close() })
	waitListening(t, dsn, name)
	return n
}

// wav returns a telephone-rate recording of n bytes of samples.
func wav(n int) []byte {
	return append(umwav.Header(umwav.Rate, n), bytes.Repeat([]byte{0x7f}, n)...)
}

func mailbox(t testing.TB, n *node, name string) *um.Mailbox {
	t.Helper()
	mb, err := n.svc.EnsureMailbox(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return mb
}

// waitFor returns the first change on sub that match accepts, failing the
// test after 10s.
func waitFor(t testing.TB, sub *um.Subscription, what string, match func(um.Change) bool) um.Change {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case <-sub.C():
		case <-timeout:
			t.Fatalf("no change on %q: %s within 10s", sub.Mailbox(), what)
		}
		cs, err := sub.Next()
		if err != nil {
			t.Fatalf("Next() = %v", err)
		}
		for _, c := range cs {
			if match(c) {
				return c
			}
		}
	}
}

func hasEvent(kind um.EventKind, id uuid.UUID) func(um.Change) bool {
	return func(c um.Change) bool {
		for _, e := range c.Events {
			if e.Kind == kind && (id == uuid.Nil || e.Message.ID == id) {
				return true
			}
		}
		return false
	}
}

// TestClusterDepositAndEveryNodesLamp: a deposit on node A reaches node B's
// subscribers; B plays it, and the lamp goes off. Each change is announced
// by the MWI hook of every node, naming the node that made it.
func TestClusterDepositAndEveryNodesLamp(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	a, b := startNode(t, dsn, "A"), startNode(t, dsn, "B")
	mbA := mailbox(t, a, "1001")
	mbB := mailbox(t, b, "1001")
	subA := a.svc.Subscribe("1001", um.SubscribeOptions{})
	defer subA.Close()
	subB := b.svc.Subscribe("1001", um.SubscribeOptions{})
	defer subB.Close()

	m, err := mbA.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav(100)), CallerNumber: "+4930123456", Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// um reads the state when its dispatcher gets to the mailbox; flush so
	// A announces the state after the deposit, not a later one.
	a.svc.FlushMWI()
	c := waitFor(t, subB, "A's deposit", hasEvent(um.EventAdded, m.ID))
	if c.Node != "A" {
		t.Errorf("deposit reached B with Node %q, want A", c.Node)
	}
	if c.Events[0].Message.CallerNumber != "+4930123456" || c.Events[0].Message.UID != m.UID {
		t.Errorf("B got message %+v, want caller and UID of %+v", c.Events[0].Message, m)
	}

	// Let B's MWI dispatcher take in the deposit before B plays it. A change
	// outside INBOX from A after the deposit: once B has it, B's feed has
	// handed the deposit to B's dispatcher, and FlushMWI waits for that.
	// (Without this the test would race um's dispatcher: a read for A's
	// change that already sees B's heard records B's new state as known, and
	// B's own announcement of it is then dropped. See the package report.)
	if _, err := mbA.CreateFolder(ctx, "FromA"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, subB, "A's CreateFolder", func(c um.Change) bool { return c.Events[0].Kind == um.EventFolderCreated })
	b.svc.FlushMWI()

	if err := mbB.MarkHeard(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, subA, "B's MarkHeard", hasEvent(um.EventFlags, m.ID))
	// The same for A: once A has B's next change, A's dispatcher has the
	// MarkHeard, and FlushMWI below covers it.
	if _, err := mbB.CreateFolder(ctx, "Saved"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, subA, "B's CreateFolder", func(c um.Change) bool { return c.Events[0].Kind == um.EventFolderCreated })
	a.svc.FlushMWI()
	b.svc.FlushMWI()

	st, err := a.svc.MWI(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	if st.Waiting() || st.Old != 1 {
		t.Errorf("A's MWI() after heard on B = %v, want 0/1 (lamp off)", st)
	}
	want := []um.MWIState{{Mailbox: "1001", New: 1, Node: "A"}, {Mailbox: "1001", Old: 1, Node: "B"}}
	for _, n := range []*node{a, b} {
		if got := n.hookCalls(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s's MWI hook calls = %v, want %v: the deposit made on A, the heard made on B", n.name, got, want)
		}
	}
}

// TestClusterConcurrentFlags: node A adds \Flagged while node B adds \Seen
// to the same message, many times; neither change is ever lost.
func TestClusterConcurrentFlags(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	a, b := startNode(t, dsn, "A"), startNode(t, dsn, "B")
	mbA, mbB := mailbox(t, a, "1001"), mailbox(t, b, "1001")
	m, err := mbA.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav(10))})
	if err != nil {
		t.Fatal(err)
	}
	ids := []uuid.UUID{m.ID}
	for round := range 50 {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			if _, err := mbA.SetFlags(ctx, ids, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagFlagged, Keywords: []string{"$A"}}); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := mbB.SetFlags(ctx, ids, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard, Keywords: []string{"$B"}}); err != nil {
				t.Error(err)
			}
		}()
		wg.Wait()
		got, err := mbA.Message(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Flags != um.FlagFlagged|um.FlagHeard || fmt.Sprint(got.Keywords) != "[$A $B]" {
			t.Fatalf("round %d: flags %v %v after concurrent adds on two nodes, want \\Seen \\Flagged [$A $B]", round, got.Flags, got.Keywords)
		}
		if _, err := mbB.SetFlags(ctx, ids, um.FlagOp{Mode: um.FlagsReplace}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClusterLostNotificationConnection kills node B's listening backend,
// makes a change on A, and checks B still learns of it: B reconnects and
// announces a resync of the mailbox, after which the change is in B's view.
func TestClusterLostNotificationConnection(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	a, b := startNode(t, dsn, "A"), startNode(t, dsn, "B")
	mbA, mbB := mailbox(t, a, "1001"), mailbox(t, b, "1001")
	subB := b.svc.Subscribe("1001", um.SubscribeOptions{})
	defer subB.Close()

	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var killed int
	err = conn.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
		WHERE application_name = 'um-watch/B' AND datname = current_database()) AS t WHERE ok`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminated %d listening backends of B (%v), want 1", killed, err)
	}
	m, err := mbA.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav(10))})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, subB, "a resync after B's feed reconnects", hasEvent(um.EventResync, uuid.Nil))
	list, err := mbB.List(ctx, um.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != m.ID {
		t.Errorf("B's INBOX after resync = %v, want the deposit made while B was deaf", list)
	}
	// And the feed works again.
	waitListening(t, dsn, "B")
	m2, err := mbA.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav(10))})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, subB, "a deposit after reconnecting", hasEvent(um.EventAdded, m2.ID))
	// B's hook hears A's deposits, the one made while B was deaf too.
	testwait.Until(t, 10*time.Second, 10*time.Millisecond, "B's lamp showing both deposits", func() bool {
		calls := b.hookCalls()
		return len(calls) > 0 && calls[len(calls)-1].New == 2
	})
}

// TestClusterExpungeKeepsUndeleted: node A's client flags two messages
// \Deleted, node B's client clears \Deleted on one of them, and A expunges
// at once, before B's change has reached A's feed. A keeps the one B
// undeleted, and B hears of the one A removed.
func TestClusterExpungeKeepsUndeleted(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	a, b := startNode(t, dsn, "A"), startNode(t, dsn, "B")
	mbA, mbB := mailbox(t, a, "1001"), mailbox(t, b, "1001")
	subB := b.svc.Subscribe("1001", um.SubscribeOptions{})
	defer subB.Close()
	var ms []um.Message
	for range 2 {
		m, err := mbA.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav(10))})
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	kept, gone := ms[0], ms[1]
	del := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted}
	if _, err := mbA.SetFlags(ctx, []uuid.UUID{kept.ID, gone.ID}, del); err != nil {
		t.Fatal(err)
	}
	undel := um.FlagOp{Mode: um.FlagsRemove, Flags: um.FlagDeleted}
	if changed, err := mbB.SetFlags(ctx, []uuid.UUID{kept.ID}, undel); err != nil || len(changed) != 1 {
		t.Fatalf("B's SetFlags(-\\Deleted) = %v, %v; want the message changed", changed, err)
	}

	expunged, err := mbA.Expunge(ctx, um.Inbox, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(expunged) != 1 || expunged[0].ID != gone.ID {
		t.Fatalf("A's Expunge removed %v, want only %s: B cleared \\Deleted on %s", expunged, gone.ID, kept.ID)
	}
	m, err := mbA.Message(ctx, kept.ID)
	if err != nil {
		t.Fatalf("the message B undeleted is gone from A: %v", err)
	}
	if m.Flags.Has(um.FlagDeleted) {
		t.Errorf("the message B undeleted has flags %v on A, want no \\Deleted", m.Flags)
	}
	list, err := mbB.List(ctx, um.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != kept.ID {
		t.Errorf("B's INBOX after A's expunge = %v, want %s only", list, kept.ID)
	}
	c := waitFor(t, subB, "A's expunge", hasEvent(um.EventRemoved, gone.ID))
	if c.Node != "A" {
		t.Errorf("A's expunge reached B with Node %q, want A", c.Node)
	}
	for _, e := range c.Events {
		if e.Kind == um.EventRemoved && (e.Message.UID != gone.UID || e.Folder != um.Inbox) {
			t.Errorf("B got removal %+v, want UID %d in %s", e, gone.UID, um.Inbox)
		}
	}
}

// TestClusterExpungeRacesUndelete runs A's EXPUNGE and B's clearing of
// \Deleted at the same time, many times. Whichever commits first wins, and
// never both: a message B undeleted is never expunged, and one A expunged
// is never reported changed by B.
func TestClusterExpungeRacesUndelete(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	a, b := startNode(t, dsn, "A"), startNode(t, dsn, "B")
	mbA, mbB := mailbox(t, a, "1001"), mailbox(t, b, "1001")
	del := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted}
	undel := um.FlagOp{Mode: um.FlagsRemove, Flags: um.FlagDeleted}
	var expungedRounds, keptRounds int
	for round := range 40 {
		m, err := mbA.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav(10))})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := mbA.SetFlags(ctx, []uuid.UUID{m.ID}, del); err != nil {
			t.Fatal(err)
		}
		var (
			wg             sync.WaitGroup
			gone, changed  []um.Message
			expErr, setErr error
		)
		wg.Add(2)
		go func() {
			defer wg.Done()
			gone, expErr = mbA.Expunge(ctx, um.Inbox, []um.UID{m.UID})
		}()
		go func() {
			defer wg.Done()
			changed, setErr = mbB.SetFlags(ctx, []uuid.UUID{m.ID}, undel)
		}()
		wg.Wait()
		if expErr != nil {
			t.Fatalf("round %d: A's Expunge = %v", round, expErr)
		}
		if setErr != nil && !errors.Is(setErr, um.ErrNotFound) {
			t.Fatalf("round %d: B's SetFlags = %v", round, setErr)
		}
		_, getErr := mbA.Message(ctx, m.ID)
		exists := getErr == nil
		if getErr != nil && !errors.Is(getErr, um.ErrNotFound) {
			t.Fatal(getErr)
		}
		switch {
		case len(changed) == 1 && !exists:
			t.Fatalf("round %d: B cleared \\Deleted, yet A expunged the message (%v)", round, gone)
		case len(gone) == 1 && exists:
			t.Fatalf("round %d: A's Expunge returned the message, yet it still exists", round)
		case len(gone) == 0 && !exists:
			t.Fatalf("round %d: the message vanished without A's Expunge returning it", round)
		case exists && len(changed) != 1:
			t.Fatalf("round %d: the message was kept, but B's SetFlags = %v, %v", round, changed, setErr)
		}
		if exists {
			keptRounds++
		} else {
			expungedRounds++
		}
	}
	t.Logf("expunged in %d rounds, undeleted first in %d", expungedRounds, keptRounds)
}
