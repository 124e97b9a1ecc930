package upstream_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/upstream"
	"github.com/google/uuid"
)

// frozenNode is a node's view of a shared memstore whose lease and state
// calls can be held up, as a process that is paused (SIGSTOP, a stalled
// VM) holds them: a call held up reaches the store when it is let go,
// whatever became of its context meanwhile, as a request on the wire does.
type frozenNode struct {
	*memstore.Store
	lease, state gate
}

// gate holds up calls while it is shut.
type gate struct {
	mu      sync.Mutex
	shut    chan struct{} // while not nil, calls wait until it is closed
	waiting int
}

func (g *gate) pass() {
	g.mu.Lock()
	c := g.shut
	if c != nil {
		g.waiting++
	}
	g.mu.Unlock()
	if c != nil {
		<-c
	}
}

func (g *gate) close() {
	g.mu.Lock()
	g.shut = make(chan struct{})
	g.waiting = 0
	g.mu.Unlock()
}

func (g *gate) open() {
	g.mu.Lock()
	if g.shut != nil {
		close(g.shut)
		g.shut = nil
	}
	g.mu.Unlock()
}

func (g *gate) held() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiting
}

func (f *frozenNode) AcquireLease(ctx context.Context, mailbox, purpose, node string, ttl time.Duration) (um.Lease, error) {
	f.lease.pass()
	return f.Store.AcquireLease(context.WithoutCancel(ctx), mailbox, purpose, node, ttl)
}

func (f *frozenNode) PutState(ctx context.Context, l um.Lease, data []byte) error {
	f.state.pass()
	return f.Store.PutState(context.WithoutCancel(ctx), l, data)
}

// An owner paused past its lease, in the middle of saving the state that
// precedes an APPEND, finds its write refused when it resumes, before its
// lease keeper has noticed anything: it stops syncing at once and appends
// nothing, and the node that took over has carried the deposit up, once.
func TestPausedOwnerWritesNothingAfterItsLease(t *testing.T) {
	d := startDovecot(t, "1001")
	ctx := context.Background()
	shared := memstore.New()
	frozen := &frozenNode{Store: shared}
	t.Cleanup(frozen.lease.open)
	t.Cleanup(frozen.state.open)
	opts := testOptions
	opts.LeaseTTL = 600 * time.Millisecond
	start := func(st um.Store, name string) (*um.Service, *upstream.Engine) {
		svc, err := um.New(st, &um.Options{Node: name})
		if err != nil {
			t.Fatal(err)
		}
		eng, err := upstream.New(svc, nil, &opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { eng.Close(); svc.Close() })
		if _, err := svc.EnsureMailbox(ctx, "1001"); err != nil {
			t.Fatal(err)
		}
		if err := eng.Add(ctx, dovecotConfig(d, "1001")); err != nil {
			t.Fatal(err)
		}
		return svc, eng
	}
	svcA, engA := start(frozen, "A")
	eventually(t, "A owns the mailbox", func() bool { return engA.Status("1001").Owning })
	_, engB := start(shared, "B")
	eventually(t, "B names A as the owner", func() bool { return engB.Status("1001").Owner == "A" })
	if err := engA.Sync(ctx, "1001"); err != nil {
		t.Fatal(err)
	}

	frozen.lease.close()
	frozen.state.close()
	mb, err := svcA.Mailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	id := deposit(t, mb, "1").ID
	eventually(t, "B takes the mailbox over", func() bool { return engB.Status("1001").Owning })
	mc := newMailClient(t, d, "1001")
	eventually(t, "B's copy of the deposit", func() bool { return len(mc.find("INBOX", id)) == 1 })

	eventually(t, "A's save before its APPEND held up", func() bool { return frozen.state.held() > 0 })

	// A resumes, its keeper still held up: the store refuses the write.
	frozen.state.open()
	eventually(t, "A's sync stopped on the refused write", func() bool {
		return errors.Is(engA.Status("1001").LastError, um.ErrLeaseHeld)
	})
	frozen.lease.open()
	eventually(t, "A names B as the owner", func() bool {
		st := engA.Status("1001")
		return !st.Owning && st.Owner == "B"
	})
	if err := engB.Sync(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	if err := onceEach(mc, []uuid.UUID{id}); err != nil {
		t.Fatal(err)
	}
}
