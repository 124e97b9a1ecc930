package storetest

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
)

// testLeaser checks the optional um.Leaser: one holder at a time per
// mailbox and purpose, renewal keeps the Epoch, a release or an expiry lets
// another node take over with a larger Epoch.
func testLeaser(t *testing.T, s um.Store) {
	ls, ok := s.(um.Leaser)
	if !ok {
		notImplemented(t, "um.Leaser")
	}
	mustMailbox(t, s, box)
	a, err := ls.AcquireLease(ctx, box, "upstream", "A", time.Hour)
	if err != nil || a.Holder != "A" || a.Mailbox != box || a.Purpose != "upstream" || a.Epoch == 0 {
		t.Fatalf("AcquireLease(A) = %+v, %v; want a lease of A with an Epoch", a, err)
	}
	again, err := ls.AcquireLease(ctx, box, "upstream", "A", time.Hour)
	if err != nil || again.Epoch != a.Epoch || again.Expires.Before(a.Expires) {
		t.Errorf("AcquireLease(A) again = %+v, %v; want a renewal of epoch %d expiring no earlier", again, err, a.Epoch)
	}
	held, err := ls.AcquireLease(ctx, box, "upstream", "B", time.Hour)
	if !errors.Is(err, um.ErrLeaseHeld) || held.Holder != "A" {
		t.Errorf("AcquireLease(B) while A holds = %+v, %v; want A's lease and ErrLeaseHeld", held, err)
	}
	if cur, err := ls.CurrentLease(ctx, box, "upstream"); err != nil || cur.Holder != "A" || cur.Epoch != a.Epoch {
		t.Errorf("CurrentLease() = %+v, %v; want A's", cur, err)
	}
	if f, err := ls.AcquireLease(ctx, box, "forward", "B", time.Hour); err != nil || f.Holder != "B" {
		t.Errorf("AcquireLease(forward, B) while A holds upstream = %+v, %v; want B's: purposes are apart", f, err)
	}
	if err := ls.ReleaseLease(ctx, again); err != nil {
		t.Fatalf("ReleaseLease(A) = %v", err)
	}
	if cur, err := ls.CurrentLease(ctx, box, "upstream"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("CurrentLease() after release = %+v, %v; want ErrNotFound", cur, err)
	}
	b, err := ls.AcquireLease(ctx, box, "upstream", "B", time.Hour)
	if err != nil || b.Holder != "B" || b.Epoch <= a.Epoch {
		t.Errorf("AcquireLease(B) after A released = %+v, %v; want B's with an Epoch over %d", b, err, a.Epoch)
	}
	if err := ls.ReleaseLease(ctx, a); err != nil {
		t.Errorf("ReleaseLease(A's old lease) = %v, want no error", err)
	}
	if cur, _ := ls.CurrentLease(ctx, box, "upstream"); cur.Holder != "B" {
		t.Errorf("releasing A's old lease ended B's: current %+v", cur)
	}

	// A holder that stops renewing loses the lease when it expires.
	short, err := ls.AcquireLease(ctx, box, "expiring", "A", 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if cur, err := ls.CurrentLease(ctx, box, "expiring"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("CurrentLease() after expiry = %+v, %v; want ErrNotFound", cur, err)
	}
	taken, err := ls.AcquireLease(ctx, box, "expiring", "B", time.Hour)
	if err != nil || taken.Holder != "B" || taken.Epoch <= short.Epoch {
		t.Errorf("AcquireLease(B) after A's lease expired = %+v, %v; want B's with an Epoch over %d", taken, err, short.Epoch)
	}
	if _, err := ls.AcquireLease(ctx, "nobody", "upstream", "A", time.Hour); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("AcquireLease(unknown mailbox) = %v, want ErrNotFound", err)
	}
}

// testLeaserShared checks that a lease holds for a peer Store on the same
// data and that of nodes racing for a free lease exactly one wins.
func (su Suite) testLeaserShared(t *testing.T, s um.Store) {
	if _, ok := s.(um.Leaser); !ok {
		notImplemented(t, "um.Leaser")
	}
	if su.Peer == nil {
		t.Skip("Suite.Peer not set: the store serves one process")
	}
	mustMailbox(t, s, box)
	stores := []um.Leaser{s.(um.Leaser), su.Peer(t, s).(um.Leaser), su.Peer(t, s).(um.Leaser)}
	if _, err := stores[0].AcquireLease(ctx, box, "upstream", "A", time.Hour); err != nil {
		t.Fatal(err)
	}
	if l, err := stores[1].AcquireLease(ctx, box, "upstream", "B", time.Hour); !errors.Is(err, um.ErrLeaseHeld) || l.Holder != "A" {
		t.Errorf("AcquireLease(B) on a peer while A holds = %+v, %v; want A's lease and ErrLeaseHeld", l, err)
	}
	var wg sync.WaitGroup
	won := make([]bool, len(stores))
	for i, ls := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ls.AcquireLease(ctx, box, "forward", []string{"A", "B", "C"}[i], time.Hour)
			won[i] = err == nil
			if err != nil && !errors.Is(err, um.ErrLeaseHeld) {
				t.Errorf("AcquireLease() = %v, want nil or ErrLeaseHeld", err)
			}
		}()
	}
	wg.Wait()
	if n := count(won); n != 1 {
		t.Errorf("3 nodes racing for a free lease: %d won, want exactly 1", n)
	}
}

func count(bs []bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// testOutwardState checks the optional um.OutwardState: state round trips,
// and a write under a lease that is no longer current is refused.
func (su Suite) testOutwardState(t *testing.T, s um.Store) {
	os, ok := s.(um.OutwardState)
	if !ok {
		notImplemented(t, "um.OutwardState")
	}
	ls, ok := s.(um.Leaser)
	if !ok {
		t.Fatal("the store implements um.OutwardState without um.Leaser, whose leases fence its writes")
	}
	mustMailbox(t, s, box)
	if _, err := os.GetState(ctx, box, "upstream"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("GetState(never put) = %v, want ErrNotFound", err)
	}
	a, err := ls.AcquireLease(ctx, box, "upstream", "A", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	v1 := content(5000)
	if err := os.PutState(ctx, a, v1); err != nil {
		t.Fatalf("PutState(A's lease) = %v", err)
	}
	if got, err := os.GetState(ctx, box, "upstream"); err != nil || !bytes.Equal(got, v1) {
		t.Errorf("GetState() = %d bytes, %v; want the %d put", len(got), err, len(v1))
	}
	if _, err := os.GetState(ctx, box, "forward"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("GetState(another purpose) = %v, want ErrNotFound", err)
	}
	if err := os.PutState(ctx, a, make([]byte, um.MaxOutwardState+1)); !errors.Is(err, um.ErrInvalid) {
		t.Errorf("PutState(over MaxOutwardState) = %v, want ErrInvalid", err)
	}
	if err := ls.ReleaseLease(ctx, a); err != nil {
		t.Fatal(err)
	}
	b, err := ls.AcquireLease(ctx, box, "upstream", "B", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.PutState(ctx, a, []byte("stale")); !errors.Is(err, um.ErrLeaseHeld) {
		t.Errorf("PutState(A's lease after B took over) = %v, want ErrLeaseHeld", err)
	}
	if err := os.DeleteState(ctx, a); !errors.Is(err, um.ErrLeaseHeld) {
		t.Errorf("DeleteState(A's lease after B took over) = %v, want ErrLeaseHeld", err)
	}
	if got, _ := os.GetState(ctx, box, "upstream"); !bytes.Equal(got, v1) {
		t.Errorf("a refused write changed the state to %q", got)
	}
	if err := os.PutState(ctx, b, []byte("v2")); err != nil {
		t.Errorf("PutState(B's lease) = %v", err)
	}
	if su.Reopen != nil {
		s = su.Reopen(t, s)
		os = s.(um.OutwardState)
		if got, err := os.GetState(ctx, box, "upstream"); err != nil || string(got) != "v2" {
			t.Errorf("GetState() after reopen = %q, %v; want v2", got, err)
		}
		if b, err = s.(um.Leaser).AcquireLease(ctx, box, "upstream", "B", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.DeleteState(ctx, b); err != nil {
		t.Errorf("DeleteState(B's lease) = %v", err)
	}
	if _, err := os.GetState(ctx, box, "upstream"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("GetState() after DeleteState = %v, want ErrNotFound", err)
	}
	if err := os.DeleteState(ctx, b); err != nil {
		t.Errorf("DeleteState(nothing there) = %v, want no error", err)
	}
}
