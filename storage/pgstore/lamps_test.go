package pgstore_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/testwait"
)

// lastLamp returns n's last MWI hook call for mailbox.
func lastLamp(n *node, mailbox string) (um.MWIState, bool) {
	calls := n.hookCalls()
	for i := len(calls) - 1; i >= 0; i-- {
		if calls[i].Mailbox == mailbox {
			return calls[i], true
		}
	}
	return um.MWIState{}, false
}

// waitLamp waits until the last hook call of every node for 1001 is want.
func waitLamp(t *testing.T, nodes []*node, want um.MWIState) {
	t.Helper()
	for _, n := range nodes {
		testwait.Until(t, 10*time.Second, 5*time.Millisecond, fmt.Sprintf("node %s's hook giving %+v", n.name, want), func() bool {
			st, ok := lastLamp(n, want.Mailbox)
			return ok && st == want
		})
	}
}

// Three nodes on one database: a deposit on one and a heard on another
// fire the MWI hook of all three, each call naming the node where the
// change was made, since a phone's SIP subscription may be held by any.
func TestClusterHeardOnOneNodeFiresEveryHook(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	nodes := []*node{startNode(t, dsn, "A"), startNode(t, dsn, "B"), startNode(t, dsn, "C")}
	a, b := nodes[0], nodes[1]
	m, err := mailbox(t, a, "1001").Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav(100)), Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitLamp(t, nodes, um.MWIState{Mailbox: "1001", New: 1, Node: "A"})

	if err := mailbox(t, b, "1001").MarkHeard(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	waitLamp(t, nodes, um.MWIState{Mailbox: "1001", Old: 1, Node: "B"})
	for _, n := range nodes {
		for _, st := range n.hookCalls() {
			if st.Node != "A" && st.Node != "B" {
				t.Errorf("node %s's hook got %+v, naming neither A nor B", n.name, st)
			}
		}
	}
}

// A node started with AnnounceMWI announces every mailbox's lamp, the ones
// other nodes changed while it was down included.
func TestClusterNodeAnnouncesLampsAtStart(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	a := startNode(t, dsn, "A")
	if _, err := mailbox(t, a, "1001").Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav(100)), Duration: time.Second}); err != nil {
		t.Fatal(err)
	}
	mailbox(t, a, "1002")
	var mu sync.Mutex
	calls := map[string][]um.MWIState{}
	store := openStore(t, dsn, nil)
	svc, err := um.New(store, &um.Options{Node: "B", AnnounceMWI: true, MWI: func(st um.MWIState) {
		mu.Lock()
		defer mu.Unlock()
		calls[st.Mailbox] = append(calls[st.Mailbox], st)
	}})
	if err != nil {
		t.Fatal(err)
	}
	svc.FlushMWI()
	svc.Close()
	got := fmt.Sprint(calls) // fmt sorts map keys
	want := fmt.Sprint(map[string][]um.MWIState{"1001": {{Mailbox: "1001", New: 1, Node: "B"}}, "1002": {{Mailbox: "1002", Node: "B"}}})
	if got != want {
		t.Errorf("B's announcements at start = %v, want %v", got, want)
	}
}
