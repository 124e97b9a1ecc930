package um_test

import (
	"context"
	"testing"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/google/uuid"
)

// feedStore is a memstore shared with another node: Watch hands the test a
// way to deliver that node's changes, and afterWrite runs inside SetFlags,
// after the write and before um announces it.
type feedStore struct {
	*memstore.Store
	deliver    chan func(um.Change)
	afterWrite func()
}

func (s *feedStore) Watch(ctx context.Context, node string, deliver func(um.Change)) error {
	s.deliver <- deliver
	<-ctx.Done()
	return ctx.Err()
}

func (s *feedStore) SetFlags(ctx context.Context, mailbox string, ids []uuid.UUID, op um.FlagOp) ([]um.Message, error) {
	changed, err := s.Store.SetFlags(ctx, mailbox, ids, op)
	if s.afterWrite != nil {
		s.afterWrite()
	}
	return changed, err
}

// newFeedNode starts a service named node over a feedStore and returns the
// store, the service, its MWI log and the store's deliver function.
func newFeedNode(t *testing.T, node string) (*feedStore, *um.Service, *mwiLog, func(um.Change)) {
	t.Helper()
	store := &feedStore{Store: memstore.New(), deliver: make(chan func(um.Change), 1)}
	log := &mwiLog{}
	svc, err := um.New(store, &um.Options{Node: node, MWI: log.hook})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return store, svc, log, <-store.deliver
}

// A change from another node that arrives while this node is writing must not
// swallow this node's own announcement: the lamp would stay lit.
func TestMWIRemoteChangeDuringLocalWrite(t *testing.T) {
	store, svc, log, deliver := newFeedNode(t, "b")
	mb, _ := svc.CreateMailbox(ctx, "1001")
	m, err := mb.Deposit(ctx, um.Deposit{Audio: bytesReader(recording(10))})
	if err != nil {
		t.Fatal(err)
	}
	svc.FlushMWI()
	if st := log.last(t); !st.Waiting() {
		t.Fatalf("lamp after deposit = %v, want lit", st)
	}
	store.afterWrite = func() {
		// Node a's change lands now; the read it causes already sees the
		// heard flag this node wrote but has not announced yet.
		deliver(um.Change{Mailbox: "1001", Node: "a", Events: []um.Event{{Kind: um.EventResync}}})
		svc.FlushMWI()
	}
	if err := mb.MarkHeard(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	store.afterWrite = nil
	svc.FlushMWI()
	if st := log.last(t); st.Waiting() || st.Old != 1 {
		t.Errorf("last announced lamp = %v, want off 0/1: this node's heard was not announced", st)
	}
}

// A resync for all mailbox (empty Mailbox) reaches every subscriber, and
// announces nothing: the node that made the missed changes announced them.
func TestResyncAllReachesEverySubscriber(t *testing.T) {
	_, svc, log, deliver := newFeedNode(t, "b")
	mb, _ := svc.CreateMailbox(ctx, "1001")
	if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytesReader(recording(10))}); err != nil {
		t.Fatal(err)
	}
	svc.FlushMWI()
	calls := log.count()
	one := svc.Subscribe("1001", um.SubscribeOptions{})
	other := svc.Subscribe("1002", um.SubscribeOptions{})
	defer one.Close()
	defer other.Close()
	deliver(um.Change{Node: "a", Events: []um.Event{{Kind: um.EventResync}}})
	svc.FlushMWI()
	for _, sub := range []*um.Subscription{one, other} {
		changes, _ := sub.Next()
		if len(changes) != 1 || changes[0].Events[0].Kind != um.EventResync {
			t.Errorf("subscriber of %s got %+v, want one resync", sub.Mailbox(), changes)
		}
	}
	if log.count() != calls {
		t.Errorf("a resync with no change of state called the MWI hook")
	}
}

// On a shared store another node may announce a state this node has not
// heard of yet: a local change must be announced even when this node's
// last state looks the same.
func TestMWIAnnouncesEveryLocalChangeOnSharedStore(t *testing.T) {
	store, svc, log, _ := newFeedNode(t, "a")
	mb, _ := svc.CreateMailbox(ctx, "1001")
	m, _ := mb.Deposit(ctx, um.Deposit{Audio: bytesReader(recording(10))})
	svc.FlushMWI()
	// Node b plays the message and announces 0/1; its notification has not
	// reached this node when this node's user marks it unheard again.
	if _, err := store.Store.SetFlags(ctx, "1001", []uuid.UUID{m.ID}, um.FlagOp{Flags: um.FlagHeard}); err != nil {
		t.Fatal(err)
	}
	calls := log.count()
	if err := mb.MarkUnheard(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	svc.FlushMWI()
	if log.count() != calls+1 || !log.last(t).Waiting() {
		t.Errorf("after unheard on this node: %d new hook calls, last %v; want 1, lit", log.count()-calls, log.last(t))
	}
}
