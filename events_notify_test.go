package um_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
)

// TestSubscribeNotify: Notify is called once for each change queued for
// the subscriber, after it was queued, and not for the subscriber's own
// changes, which are not queued.
func TestSubscribeNotify(t *testing.T) {
	svc, err := um.New(memstore.New(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	ctx := context.Background()
	mb, err := svc.CreateMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	var calls, queuedAtCall atomic.Int32
	var sub *um.Subscription
	self := new(int)
	sub = svc.Subscribe("1001", um.SubscribeOptions{Source: self, Notify: func() {
		calls.Add(1)
		select {
		case <-sub.C():
			queuedAtCall.Add(1)
		default:
		}
	}})
	defer sub.Close()
	deposit := func(ctx context.Context) {
		t.Helper()
		if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(100 * time.Millisecond)), CallerNumber: "100"}); err != nil {
			t.Fatal(err)
		}
	}
	deposit(ctx)
	deposit(um.WithSource(ctx, self)) // the subscriber's own: not queued
	deposit(ctx)
	if got := calls.Load(); got != 2 {
		t.Errorf("Notify called %d times, want 2 (one per change queued, none for the own change)", got)
	}
	if got := queuedAtCall.Load(); got != 2 {
		t.Errorf("the wake-up on C was there at %d of the calls, want all 2: Notify comes after queueing", got)
	}
	changes, err := sub.Next()
	if err != nil || len(changes) != 2 {
		t.Errorf("Next = %d changes, %v; want the 2 changes Notify announced", len(changes), err)
	}
}
