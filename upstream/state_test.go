package upstream_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/upstream"
	"github.com/google/uuid"
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

// plainStore hides every optional interface of the store it holds, as a
// host's own minimal store would have none.
type plainStore struct{ um.Store }

// A PBX that kept its sync state in files moves to a store that keeps
// outward state: each mailbox's file is read once, its state goes into the
// store, and the file is renamed out of the way; the copies upstream are
// those of before, none appended again.
func TestStateFileMovedIntoTheStore(t *testing.T) {
	d := startDovecot(t, "1001")
	ctx := context.Background()
	shared := memstore.New()
	dir := t.TempDir()
	files, err := upstream.NewFileState(dir)
	if err != nil {
		t.Fatal(err)
	}
	run := func(st um.Store) (*um.Service, *upstream.Engine) {
		svc, err := um.New(st, nil)
		if err != nil {
			t.Fatal(err)
		}
		opts := testOptions
		eng, err := upstream.New(svc, files, &opts)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := svc.EnsureMailbox(ctx, "1001"); err != nil {
			t.Fatal(err)
		}
		if err := eng.Add(ctx, dovecotConfig(d, "1001")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "a full sync", func() bool {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return eng.Sync(sctx, "1001") == nil
		})
		return svc, eng
	}

	svc, eng := run(plainStore{shared})
	mb, err := svc.Mailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	if st := eng.Status("1001"); !st.Owning || st.Owner != svc.Node() {
		t.Errorf("Status() on a store without leases: Owner %q, Owning %v; want this node, %q, owning", st.Owner, st.Owning, svc.Node())
	}
	ids := []uuid.UUID{deposit(t, mb, "1").ID, deposit(t, mb, "2").ID}
	eventually(t, "a full sync", func() bool { return eng.Sync(ctx, "1001") == nil && eng.Status("1001").Messages == 2 })
	eng.Close()
	svc.Close()
	before, err := files.Load(ctx, "1001")
	if err != nil {
		t.Fatalf("state file after the first run: %v", err)
	}

	svc, eng = run(shared)
	defer svc.Close()
	defer eng.Close()
	if _, err := files.Load(ctx, "1001"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("FileState.Load() after the move = %v, want um.ErrNotFound: the file is read once", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "1001.json.migrated")); err != nil {
		t.Errorf("the moved file is not kept as 1001.json.migrated: %v", err)
	}
	b, err := shared.GetState(ctx, "1001", upstream.Purpose)
	if err != nil {
		t.Fatalf("GetState() = %v", err)
	}
	var after upstream.State
	if err := json.Unmarshal(b, &after); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if after.Messages[id].UID == 0 || after.Messages[id].UID != before.Messages[id].UID {
			t.Errorf("UID of %s in the store = %d, want %d from the file", id, after.Messages[id].UID, before.Messages[id].UID)
		}
	}
	if err := onceEach(newMailClient(t, d, "1001"), ids); err != nil {
		t.Fatal(err)
	}
}

// A store that keeps no outward state needs a StateStore from the host.
func TestNewWithoutAnyStateStore(t *testing.T) {
	svc, err := um.New(plainStore{memstore.New()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	if _, err := upstream.New(svc, nil, nil); !errors.Is(err, um.ErrInvalid) {
		t.Errorf("New(svc on a store without OutwardState, nil state) = %v, want um.ErrInvalid", err)
	}
	st, err := upstream.NewFileState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	eng, err := upstream.New(svc, st, nil)
	if err != nil {
		t.Fatalf("New(svc, a FileState) = %v", err)
	}
	eng.Close()
}
