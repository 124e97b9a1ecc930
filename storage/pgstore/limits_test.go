package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/pgstore"
)

// limitedNode opens a Store on dsn and a Service named name on it with opts.
func limitedNode(t testing.TB, dsn, name string, opts um.Options) *um.Service {
	t.Helper()
	opts.Node = name
	svc, err := um.New(openStore(t, dsn, &pgstore.Options{Node: name}), &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// TestThreeNodesNeverPassTheLimit deposits from three nodes at once into one
// mailbox until it is full: exactly MaxMessages deposits are kept, every
// other is refused with ErrMailboxFull.
func TestThreeNodesNeverPassTheLimit(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	const limit, perNode = 10, 12
	var nodes []*um.Service
	for _, name := range []string{"A", "B", "C"} {
		nodes = append(nodes, limitedNode(t, dsn, name, um.Options{MaxMessages: limit}))
	}
	if _, err := nodes[0].CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	kept, refused := 0, 0
	for _, svc := range nodes {
		mb, err := svc.Mailbox(ctx, "1001")
		if err != nil {
			t.Fatal(err)
		}
		for range perNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav(400)), Duration: time.Second})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					kept++
				case errors.Is(err, um.ErrMailboxFull):
					refused++
				default:
					t.Errorf("Deposit() = %v, want nil or ErrMailboxFull", err)
				}
			}()
		}
	}
	wg.Wait()
	mb, _ := nodes[1].Mailbox(ctx, "1001")
	inbox, err := mb.List(ctx, um.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	if kept != limit || refused != 3*perNode-limit || len(inbox) != limit {
		t.Errorf("%d deposits from 3 nodes into a mailbox of MaxMessages %d: %d kept, %d refused, INBOX holds %d; want %d, %d, %d",
			3*perNode, limit, kept, refused, len(inbox), limit, 3*perNode-limit, limit)
	}
}

// TestDeliveryModeAcrossNodesAndRestarts checks that a mode claimed on one
// node refuses another mode on the others, also after the claiming node
// restarts, until it releases.
func TestDeliveryModeAcrossNodesAndRestarts(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	a := limitedNode(t, dsn, "A", um.Options{})
	b := limitedNode(t, dsn, "B", um.Options{})
	if _, err := a.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	if err := a.ClaimDelivery("1001", "imap-sync"); err != nil {
		t.Fatal(err)
	}
	if err := b.ClaimDelivery("1001", "email-forward"); !errors.Is(err, um.ErrModeConflict) {
		t.Errorf("ClaimDelivery(email-forward) on B while A syncs = %v, want ErrModeConflict", err)
	}
	a.Close()
	a.Store().Close()
	a = limitedNode(t, dsn, "A", um.Options{}) // A restarts
	if err := b.ClaimDelivery("1001", "email-forward"); !errors.Is(err, um.ErrModeConflict) {
		t.Errorf("ClaimDelivery(email-forward) on B after A restarted = %v, want ErrModeConflict", err)
	}
	if mode, nodes, err := b.DeliveryMode(ctx, "1001"); err != nil || mode != "imap-sync" || len(nodes) != 1 || nodes[0] != "A" {
		t.Errorf("DeliveryMode() = %q %v, %v; want imap-sync [A]", mode, nodes, err)
	}
	a.ReleaseDelivery("1001", "imap-sync")
	if err := b.ClaimDelivery("1001", "email-forward"); err != nil {
		t.Errorf("ClaimDelivery(email-forward) on B after A released = %v", err)
	}
}
