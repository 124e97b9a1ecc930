package um_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/google/uuid"
)

// lookupHook is a store that runs a function once, right after the first
// lookup of one message: another caller acting between Delete's look and
// its action.
type lookupHook struct {
	um.Store
	id    uuid.UUID
	fired atomic.Bool
	then  func()
}

func (h *lookupHook) Unwrap() um.Store { return h.Store }

func (h *lookupHook) Get(ctx context.Context, mailbox string, id uuid.UUID) (um.Message, error) {
	m, err := h.Store.Get(ctx, mailbox, id)
	if id == h.id && h.fired.CompareAndSwap(false, true) {
		h.then() // its own lookups pass through
	}
	return m, err
}

// A voicemail undeleted between a Delete's look (it was in Trash, so the
// delete would purge it) and its action is deleted again, into Trash, and
// never removed for good: the undelete was the later word.
func TestDeleteOfTrashRacingUndeleteKeepsTheVoicemail(t *testing.T) {
	hook := &lookupHook{Store: memstore.New()}
	svc := newService(t, hook, um.Options{})
	m := depositInto(t, svc, "1001")
	mb, err := svc.Mailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	if err := mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	hook.id = m.ID
	hook.then = func() {
		if _, err := mb.Undelete(ctx, m.ID); err != nil {
			t.Errorf("Undelete: %v", err)
		}
	}
	if err := mb.Delete(ctx, m.ID); err != nil {
		t.Fatalf("Delete racing Undelete = %v", err)
	}
	got, err := mb.Message(ctx, m.ID)
	if err != nil {
		t.Fatalf("the undeleted voicemail was purged: %v", err)
	}
	if got.Folder != um.Trash {
		t.Fatalf("voicemail in %q, want Trash (deleted again)", got.Folder)
	}

	// Without a race, a delete in Trash still purges.
	if err := mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Message(ctx, m.ID); err == nil {
		t.Fatal("a delete of a voicemail in Trash left it")
	}
}
