package lease_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/lease"
	"github.com/embeddedum/um/internal/testwait"
	"github.com/embeddedum/um/storage/memstore"
)

func newStore(t *testing.T) *memstore.Store {
	t.Helper()
	s := memstore.New()
	if err := s.CreateMailbox(context.Background(), "1001"); err != nil {
		t.Fatal(err)
	}
	return s
}

// running counts, per node, the work calls that have not returned yet.
type running struct {
	mu    sync.Mutex
	now   map[string]int
	most  int // the most nodes ever running at once
	total map[string]int
}

func (r *running) work(node string) func(context.Context, *lease.Held) {
	return func(ctx context.Context, h *lease.Held) {
		r.mu.Lock()
		r.now[node]++
		r.total[node]++
		n := 0
		for _, c := range r.now {
			if c > 0 {
				n++
			}
		}
		r.most = max(r.most, n)
		r.mu.Unlock()
		<-ctx.Done()
		r.mu.Lock()
		r.now[node]--
		r.mu.Unlock()
	}
}

func (r *running) runs(node string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now[node]
}

func TestOneNodeWorksAtATimeAndTheNextTakesOverOnRelease(t *testing.T) {
	s := newStore(t)
	r := &running{now: map[string]int{}, total: map[string]int{}}
	opts := func(node string) lease.Options {
		return lease.Options{Leaser: s, Mailbox: "1001", Purpose: "upstream", Node: node, TTL: 300 * time.Millisecond, Retry: 20 * time.Millisecond}
	}
	ka, kb := lease.New(opts("a")), lease.New(opts("b"))
	actx, stopA := context.WithCancel(context.Background())
	bctx, stopB := context.WithCancel(context.Background())
	defer stopB()
	aDone := make(chan error, 1)
	go func() { aDone <- ka.Run(actx, r.work("a")) }()
	testwait.Until(t, 5*time.Second, 5*time.Millisecond, "a to work", func() bool { return r.runs("a") == 1 })
	go func() { _ = kb.Run(bctx, r.work("b")) }()

	// b keeps asking while a renews: a's work is never interrupted.
	time.Sleep(time.Second)
	if r.runs("b") != 0 || r.total["a"] != 1 {
		t.Fatalf("b runs %d, a started %d times; want 0 and 1", r.runs("b"), r.total["a"])
	}
	if holder, epoch, mine := kb.Owner(); holder != "a" || mine || epoch == 0 {
		t.Fatalf("b sees owner %q epoch %d mine %v, want a's", holder, epoch, mine)
	}
	_, epochA, _ := ka.Owner()

	stopA()
	if err := <-aDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	// Released, not expired: b takes over within its retry interval, far
	// sooner than the lease's time to live.
	testwait.Until(t, 5*time.Second, 5*time.Millisecond, "b to take over", func() bool { return r.runs("b") == 1 })
	holder, epochB, mine := kb.Owner()
	if holder != "b" || !mine || epochB <= epochA {
		t.Fatalf("b sees owner %q epoch %d mine %v, want b with an epoch above %d", holder, epochB, mine, epochA)
	}
	if r.most != 1 {
		t.Fatalf("%d nodes worked at once", r.most)
	}
}

// stalling is a Leaser whose renewals can be made to fail, as when a node
// loses its database connection.
type stalling struct {
	um.Leaser
	down atomic.Bool
}

func (s *stalling) AcquireLease(ctx context.Context, mailbox, purpose, node string, ttl time.Duration) (um.Lease, error) {
	if s.down.Load() {
		return um.Lease{}, errors.New("connection refused")
	}
	return s.Leaser.AcquireLease(ctx, mailbox, purpose, node, ttl)
}

func TestWorkStopsBeforeALeaseThatCannotBeRenewedPassesOn(t *testing.T) {
	s := newStore(t)
	cut := &stalling{Leaser: s}
	const ttl = 400 * time.Millisecond
	var stoppedAt atomic.Int64
	ka := lease.New(lease.Options{Leaser: cut, Mailbox: "1001", Purpose: "forward", Node: "a", TTL: ttl, Retry: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{}, 4)
	go func() {
		_ = ka.Run(ctx, func(ctx context.Context, h *lease.Held) {
			started <- struct{}{}
			<-ctx.Done()
			stoppedAt.Store(time.Now().UnixNano())
		})
	}()
	<-started
	cut.down.Store(true)
	testwait.Until(t, 5*time.Second, 5*time.Millisecond, "a's work to stop", func() bool { return stoppedAt.Load() != 0 })
	if _, _, mine := ka.Owner(); mine {
		t.Fatal("a still says it holds the lease after its work stopped")
	}
	if ka.Err() == nil {
		t.Fatal("Err is nil after failed renewals")
	}
	// The store still gives the lease to a until it expires: the work
	// stopped while nobody else could have started.
	cur, err := s.CurrentLease(context.Background(), "1001", "forward")
	if err != nil {
		t.Fatalf("the lease expired before a's work stopped: %v", err)
	}
	if time.Unix(0, stoppedAt.Load()).After(cur.Expires) {
		t.Fatalf("work stopped at %v, after the lease's expiry %v", time.Unix(0, stoppedAt.Load()), cur.Expires)
	}
	kb := lease.New(lease.Options{Leaser: s, Mailbox: "1001", Purpose: "forward", Node: "b", TTL: ttl, Retry: 20 * time.Millisecond})
	bStarted := make(chan *lease.Held, 1)
	go func() {
		_ = kb.Run(ctx, func(ctx context.Context, h *lease.Held) {
			bStarted <- h
			<-ctx.Done()
		})
	}()
	var h *lease.Held
	select {
	case h = <-bStarted:
	case <-time.After(5 * time.Second):
		t.Fatal("b never took over the expired lease")
	}
	if h.Lease().Epoch <= cur.Epoch {
		t.Fatalf("b's epoch %d, want above a's %d", h.Lease().Epoch, cur.Epoch)
	}
	// a's old lease can no longer write state.
	if err := s.PutState(context.Background(), cur, []byte("late")); !errors.Is(err, um.ErrLeaseHeld) {
		t.Fatalf("PutState under a's expired lease = %v, want ErrLeaseHeld", err)
	}
}

func TestWithoutALeaserTheWorkRunsAtOnce(t *testing.T) {
	k := lease.New(lease.Options{Mailbox: "1001", Purpose: "upstream", Node: "solo"})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		_ = k.Run(ctx, func(ctx context.Context, h *lease.Held) {
			if h.Lease().Holder != "solo" {
				t.Errorf("holder %q", h.Lease().Holder)
			}
			close(ran)
			<-ctx.Done()
		})
	}()
	<-ran
	if holder, _, mine := k.Owner(); holder != "solo" || !mine {
		t.Fatalf("owner %q mine %v", holder, mine)
	}
	cancel()
}

// A holder that dies leaves its lease to expire; a node waiting for it asks
// again when it expires, not only at its next Retry, so the takeover takes
// the lease's remaining time to live.
func TestTheNextNodeAsksWhenTheDeadHoldersLeaseExpires(t *testing.T) {
	s := newStore(t)
	dead, err := s.AcquireLease(context.Background(), "1001", "upstream", "dead", 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	r := &running{now: map[string]int{}, total: map[string]int{}}
	k := lease.New(lease.Options{Leaser: s, Mailbox: "1001", Purpose: "upstream", Node: "b", TTL: 300 * time.Millisecond, Retry: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = k.Run(ctx, r.work("b")) }()
	// Retry is an hour: only a request timed by the expiry gets the lease.
	testwait.Until(t, 10*time.Second, 5*time.Millisecond, "b to take over", func() bool { return r.runs("b") == 1 })
	if _, epoch, mine := k.Owner(); !mine || epoch <= dead.Epoch {
		t.Fatalf("b: epoch %d mine %v, want b's with an epoch above %d", epoch, mine, dead.Epoch)
	}
}
