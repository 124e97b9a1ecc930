package upstream_test

import (
	"context"
	"time"

	"github.com/embeddedum/um/upstream"
)

// loseState removes the sync state of mailbox from the store, as a lost
// database row would: the engine must be stopped.
func (e *env) loseState(mailbox string) {
	e.tb.Helper()
	ctx := context.Background()
	l, err := e.store.AcquireLease(ctx, mailbox, upstream.Purpose, "test", time.Minute)
	if err != nil {
		e.tb.Fatalf("AcquireLease() = %v", err)
	}
	if err := e.store.DeleteState(ctx, l); err != nil {
		e.tb.Fatalf("DeleteState() = %v", err)
	}
	if err := e.store.ReleaseLease(ctx, l); err != nil {
		e.tb.Fatalf("ReleaseLease() = %v", err)
	}
}
