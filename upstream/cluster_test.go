package upstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/upstream"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// depositOn deposits a voicemail into mailbox on n.
func depositOn(tb testing.TB, n *node, mailbox, caller string) uuid.UUID {
	tb.Helper()
	mb, err := n.svc.Mailbox(context.Background(), mailbox)
	if err != nil {
		tb.Fatal(err)
	}
	return deposit(tb, mb, caller).ID
}

// waitExactlyOnce waits until INBOX upstream holds one copy of each
// voicemail in the mailbox's INBOX (as n sees it) and nothing else.
func waitExactlyOnce(tb testing.TB, mc *mailClient, n *node, mailbox string) []uuid.UUID {
	tb.Helper()
	var ids []uuid.UUID
	var last error
	eventually(tb, "one copy upstream of each voicemail", func() bool {
		ids = n.inboxIDs(tb, mailbox)
		last = exactlyOnce(mc.copiesByID("INBOX"), ids)
		return last == nil
	})
	if err := onceEach(mc, ids); err != nil {
		tb.Fatal(err)
	}
	return ids
}

// onceEach checks that INBOX upstream holds one copy of each of ids and
// nothing else, and that no more APPENDs were made than there are copies.
func onceEach(mc *mailClient, ids []uuid.UUID) error {
	if err := exactlyOnce(mc.copiesByID("INBOX"), ids); err != nil {
		return err
	}
	if n := mc.appends("INBOX"); n != len(ids) {
		return fmt.Errorf("%d APPENDs for the %d voicemails: a copy was appended twice and removed again", n, len(ids))
	}
	return nil
}

// Sync configured for one mailbox on all three nodes of a cluster: one
// node owns it, the others name that node as the owner and leave the
// server alone, and each deposit, whichever node takes it, reaches the
// user's account exactly once. Heard on a node that does not own the
// mailbox reaches the one copy.
func TestClusterOneCopyPerDeposit(t *testing.T) {
	d := startDovecot(t, "1001")
	dsn := newDatabase(t)
	nodes := []*node{newNode(t, dsn, "n1"), newNode(t, dsn, "n2"), newNode(t, dsn, "n3")}
	for _, n := range nodes {
		n.add(t, d, "1001")
	}
	own := owner(t, "1001", nodes...)
	var ids []uuid.UUID
	for i := range 15 {
		ids = append(ids, depositOn(t, nodes[rand.IntN(len(nodes))], "1001", strconv.Itoa(i)))
	}
	mc := newMailClient(t, d, "1001")
	got := waitExactlyOnce(t, mc, own, "1001")
	if len(got) != len(ids) {
		t.Fatalf("INBOX holds %d voicemails, want the %d deposited", len(got), len(ids))
	}

	other := nodes[(slices.Index(nodes, own)+1)%len(nodes)]
	mb, err := other.svc.Mailbox(context.Background(), "1001")
	if err != nil {
		t.Fatal(err)
	}
	if err := mb.MarkHeard(context.Background(), ids[0]); err != nil {
		t.Fatal(err)
	}
	eventually(t, "heard on "+other.name+" is \\Seen upstream", func() bool {
		uids := mc.find("INBOX", ids[0])
		return len(uids) == 1 && hasFlag(mc.flags("INBOX", uids[0]), imap.FlagSeen)
	})
	syncOn(t, "1001", nodes...)
	if err := onceEach(mc, ids); err != nil {
		t.Fatalf("after a full sync: %v", err)
	}
	if n := mc.count("Trash"); n != 0 {
		t.Errorf("Trash upstream holds %d messages, want 0: nothing was removed", n)
	}

	for _, n := range nodes {
		st := n.eng.Status("1001")
		if st.Owner != own.name || st.Owning != (n == own) {
			t.Errorf("Status() on %s: Owner %q, Owning %v; want %q, %v", n.name, st.Owner, st.Owning, own.name, n == own)
		}
		if n != own && st.Connected {
			t.Errorf("Status() on %s: Connected, but only the owner connects", n.name)
		}
	}
	err = other.eng.Sync(context.Background(), "1001")
	if !errors.Is(err, um.ErrLeaseHeld) || !strings.Contains(err.Error(), own.name) {
		t.Errorf("Sync() on %s, which does not own the mailbox = %v, want um.ErrLeaseHeld naming %s", other.name, err, own.name)
	}

	// The owner stops syncing the mailbox: it releases the lease, another
	// node takes over and carries on from the state, and a deposit on the
	// node that stopped still goes up once.
	if err := own.eng.Remove("1001"); err != nil {
		t.Fatal(err)
	}
	rest := slices.DeleteFunc(slices.Clone(nodes), func(n *node) bool { return n == own })
	next := owner(t, "1001", rest...)
	ids = append(ids, depositOn(t, own, "1001", "after"))
	if got := waitExactlyOnce(t, mc, next, "1001"); len(got) != len(ids) {
		t.Fatalf("INBOX holds %d voicemails, want the %d deposited", len(got), len(ids))
	}
	if st := own.eng.Status("1001"); st.Configured {
		t.Errorf("Status() on %s after Remove: Configured", own.name)
	}
}

// The owner is SIGKILLed during a burst of deposits made on it and on the
// two other nodes: another node takes the mailbox over and carries every
// deposit up exactly once, those the dead node acknowledged too.
func TestClusterOwnerKilledDuringBurst(t *testing.T) {
	d := startDovecot(t, "1001")
	dsn := newDatabase(t)
	n2, n3 := newNode(t, dsn, "n2"), newNode(t, dsn, "n3")
	if _, err := n2.svc.EnsureMailbox(context.Background(), "1001"); err != nil {
		t.Fatal(err)
	}
	ch := startChild(t, d, dsn, childConfig{Node: "n1", Deposit: 15 * time.Millisecond})
	n2.add(t, d, "1001")
	n3.add(t, d, "1001")
	eventually(t, "n2 and n3 name the child n1 as the owner", func() bool {
		a, b := n2.eng.Status("1001"), n3.eng.Status("1001")
		return a.Owner == "n1" && b.Owner == "n1" && !a.Owning && !b.Owning
	})
	killAt := 5 + rand.IntN(20)
	for i := range 40 {
		if i == killAt {
			ch.kill()
		}
		depositOn(t, []*node{n2, n3}[i%2], "1001", strconv.Itoa(i))
		time.Sleep(10 * time.Millisecond)
	}
	own := owner(t, "1001", n2, n3)
	mc := newMailClient(t, d, "1001")
	ids := waitExactlyOnce(t, mc, own, "1001")
	acked := ch.acked()
	if len(acked) == 0 {
		t.Fatalf("the killed node acknowledged no deposit: the test did not test it (%s)", ch.errors())
	}
	for _, id := range acked {
		if !slices.Contains(ids, id) {
			t.Errorf("deposit %s, acknowledged by the killed node, is not in the mailbox", id)
		}
	}
	if len(ids) < 40+len(acked) {
		t.Errorf("the mailbox holds %d voicemails, want at least %d", len(ids), 40+len(acked))
	}
	syncOn(t, "1001", n2, n3)
	if err := onceEach(mc, ids); err != nil {
		t.Fatalf("after a full sync: %v", err)
	}
}

// The owner dies the moment the server answered its APPEND, before it
// saved the copy's UID: the state in the store says the APPEND's outcome
// is unknown, and the node that takes over finds the copy by its header
// instead of appending it again.
func TestClusterTakeoverFindsTheDeadOwnersAppend(t *testing.T) {
	d := startDovecot(t, "1001")
	dsn := newDatabase(t)
	n2 := newNode(t, dsn, "n2")
	id := func() uuid.UUID {
		mb, err := n2.svc.EnsureMailbox(context.Background(), "1001")
		if err != nil {
			t.Fatal(err)
		}
		return deposit(t, mb, "1").ID
	}()
	ch := startChild(t, d, dsn, childConfig{Node: "n1", DieAfterAppend: true})
	select {
	case <-ch.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the child did not die after its APPEND: %s", ch.errors())
	}
	mc := newMailClient(t, d, "1001")
	if n := len(mc.find("INBOX", id)); n != 1 {
		t.Fatalf("copies after the dead owner's APPEND = %d, want 1", n)
	}
	b, err := n2.store.GetState(context.Background(), "1001", upstream.Purpose)
	if err != nil {
		t.Fatalf("GetState() = %v", err)
	}
	var st upstream.State
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if e := st.Messages[id]; !e.Appending || e.UID != 0 {
		t.Fatalf("state the dead owner left for %s = %+v, want Appending without a UID", id, e)
	}

	n2.add(t, d, "1001")
	owner(t, "1001", n2)
	syncOn(t, "1001", n2)
	if err := onceEach(mc, []uuid.UUID{id}); err != nil {
		t.Fatal(err)
	}
	if n := mc.count("Trash"); n != 0 {
		t.Errorf("Trash upstream holds %d messages, want 0: no second copy was made and removed", n)
	}
}

// The owner's connections to PostgreSQL are cut (closed, or left open and
// silent): it stops syncing before its lease can pass, another node takes
// the mailbox over and carries up what was deposited meanwhile, once; when
// the link returns, the cut node stays out.
func TestClusterOwnerCutFromDatabase(t *testing.T) {
	for _, silent := range []bool{false, true} {
		name := "closed"
		if silent {
			name = "silent"
		}
		t.Run(name, func(t *testing.T) {
			d := startDovecot(t, "1001")
			dsn := newDatabase(t)
			proxy, viaProxy := newPGProxy(t, dsn)
			n1 := newNode(t, viaProxy, "n1")
			n1.add(t, d, "1001")
			owner(t, "1001", n1)
			n2, n3 := newNode(t, dsn, "n2"), newNode(t, dsn, "n3")
			n2.add(t, d, "1001")
			n3.add(t, d, "1001")
			if own := owner(t, "1001", n1, n2, n3); own != n1 {
				t.Fatalf("owner = %s, want n1, which took the lease first", own.name)
			}
			for i := range 5 {
				depositOn(t, []*node{n2, n3}[i%2], "1001", strconv.Itoa(i))
			}
			mc := newMailClient(t, d, "1001")
			waitExactlyOnce(t, mc, n2, "1001")

			proxy.cutOff(silent)
			for i := range 10 {
				depositOn(t, []*node{n2, n3}[i%2], "1001", "cut"+strconv.Itoa(i))
				time.Sleep(50 * time.Millisecond)
			}
			own := owner(t, "1001", n2, n3)
			waitExactlyOnce(t, mc, own, "1001")
			view := clusterView("1001", n1, n2, n3)
			eventuallyShow(t, "n1 no longer owns the mailbox", func() bool { return !n1.eng.Status("1001").Owning }, view)

			proxy.restore()
			for i := range 5 {
				depositOn(t, []*node{n1, n2, n3}[i%3], "1001", "back"+strconv.Itoa(i))
			}
			ids := waitExactlyOnce(t, mc, own, "1001")
			if len(ids) != 20 {
				t.Errorf("the mailbox holds %d voicemails, want the 20 deposited", len(ids))
			}
			eventuallyShow(t, "n1 names the new owner", func() bool {
				st := n1.eng.Status("1001")
				return st.Owner == own.name && !st.Owning
			}, view)
			syncOn(t, "1001", n1, n2, n3)
			if err := onceEach(mc, ids); err != nil {
				t.Fatalf("after a full sync: %v", err)
			}
		})
	}
}
