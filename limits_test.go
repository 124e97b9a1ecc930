package um_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/google/uuid"
)

// bareStore hides every optional interface of the store it holds: it is
// a um.Store and nothing more, as a host's wrapper without Unwrap is.
type bareStore struct{ um.Store }

// wrappedStore is a host's wrapper (for metrics, say) that exposes what it
// wraps.
type wrappedStore struct{ um.Store }

func (w wrappedStore) Unwrap() um.Store { return w.Store }

func newService(t testing.TB, store um.Store, opts um.Options) *um.Service {
	t.Helper()
	svc, err := um.New(store, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// TestCopyCountsEveryCopy checks that a Copy that would pass MaxMessages
// with all its copies together is refused whole, whether the store checks
// limits itself (Limiter) or um checks them before the store call.
func TestCopyCountsEveryCopy(t *testing.T) {
	for _, tt := range []struct {
		name  string
		store func() um.Store
	}{
		{"Limiter", func() um.Store { return memstore.New() }},
		{"checked by um", func() um.Store { return bareStore{memstore.New()} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			svc := newService(t, tt.store(), um.Options{MaxMessages: 3})
			mb, err := svc.CreateMailbox(ctx, "1001")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := mb.CreateFolder(ctx, "Saved"); err != nil {
				t.Fatal(err)
			}
			var ids []uuid.UUID
			for range 2 {
				m, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(recording(800)), Duration: time.Second})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, m.ID)
			}
			if _, err := mb.Copy(ctx, ids, "Saved"); !errors.Is(err, um.ErrMailboxFull) {
				t.Errorf("Copy(2 messages) in a mailbox of 2 with MaxMessages 3 = %v, want ErrMailboxFull", err)
			}
			if saved, _ := mb.List(ctx, "Saved"); len(saved) != 0 {
				t.Errorf("the refused Copy stored %d copies, want none", len(saved))
			}
			if _, err := mb.Copy(ctx, ids[:1], "Saved"); err != nil {
				t.Errorf("Copy(1 message), to 3 of 3 = %v", err)
			}
			if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(recording(800)), Duration: time.Second}); !errors.Is(err, um.ErrMailboxFull) {
				t.Errorf("Deposit() into a full mailbox = %v, want ErrMailboxFull", err)
			}
			if err := mb.Delete(ctx, ids[0]); err != nil {
				t.Fatal(err)
			}
			if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(recording(800)), Duration: time.Second}); err != nil {
				t.Fatalf("Deposit() after a delete made room = %v", err)
			}
			if _, err := mb.Undelete(ctx, ids[0]); !errors.Is(err, um.ErrMailboxFull) {
				t.Errorf("Undelete() into a full mailbox = %v, want ErrMailboxFull", err)
			}
		})
	}
}

// TestUnwrapKeepsCapabilities checks that um finds the optional
// interfaces of a wrapped store through Unwrap and says at start what it
// found, and that a wrapper without Unwrap is reported as lacking them.
func TestUnwrapKeepsCapabilities(t *testing.T) {
	var mu sync.Mutex
	var logged []string
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, fmt.Sprintf(format, args...))
	}
	inner := memstore.New()
	if _, ok := um.StoreAs[um.Expunger](wrappedStore{wrappedStore{inner}}); !ok {
		t.Error("StoreAs[Expunger](a wrapper of a wrapper of memstore) found none")
	}
	if _, ok := um.StoreAs[um.Expunger](bareStore{inner}); ok {
		t.Error("StoreAs[Expunger](a wrapper without Unwrap) found one")
	}
	svc := newService(t, wrappedStore{inner}, um.Options{Logf: logf})
	mu.Lock()
	if len(logged) == 0 || !strings.Contains(logged[0], "wrappedStore -> *memstore.Store") || !strings.Contains(logged[0], `found="Expunger ModSeqer FolderSubscriber ConditionalFlagger Limiter DeliveryModes Leaser OutwardState"`) {
		t.Errorf("New() logged %q, want the store chain and the interfaces found", logged)
	}
	mu.Unlock()
	if _, err := svc.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	// The claim is kept by the store found through Unwrap: a second
	// Service on the same store sees it.
	if err := svc.ClaimDelivery("1001", "imap-sync"); err != nil {
		t.Fatal(err)
	}
	other := newService(t, inner, um.Options{Node: "B"})
	err := other.ClaimDelivery("1001", "email-forward")
	var mc *um.ModeConflictError
	if !errors.As(err, &mc) || mc.Held != "imap-sync" || fmt.Sprint(mc.Nodes) != "[local]" {
		t.Errorf("ClaimDelivery() on another Service of the store = %v, want a ModeConflictError held by imap-sync on node local", err)
	}
	if mode, nodes, err := other.DeliveryMode(ctx, "1001"); err != nil || mode != "imap-sync" || len(nodes) != 1 {
		t.Errorf("DeliveryMode() = %q %v, %v; want imap-sync [local]", mode, nodes, err)
	}
}

// TestSetFlagsIfUnchanged checks STORE UNCHANGEDSINCE through um: a message
// changed after since is left alone and reported, the others change and
// their change is published, whether the store checks (ConditionalFlagger)
// or um does.
func TestSetFlagsIfUnchanged(t *testing.T) {
	for _, tt := range []struct {
		name  string
		store func() um.Store
	}{
		{"ConditionalFlagger", func() um.Store { return memstore.New() }},
		{"checked by um", func() um.Store { return bareStore{memstore.New()} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			svc := newService(t, tt.store(), um.Options{})
			mb, err := svc.CreateMailbox(ctx, "1001")
			if err != nil {
				t.Fatal(err)
			}
			var ms []um.Message
			for range 2 {
				m, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(recording(800)), Duration: time.Second})
				if err != nil {
					t.Fatal(err)
				}
				ms = append(ms, m)
			}
			since := ms[1].ModSeq
			if err := mb.MarkHeard(ctx, ms[0].ID); err != nil {
				t.Fatal(err)
			}
			sub := svc.Subscribe("1001", um.SubscribeOptions{})
			defer sub.Close()
			changed, modified, err := mb.SetFlagsIfUnchanged(ctx, []uuid.UUID{ms[0].ID, ms[1].ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagFlagged}, since)
			if err != nil || len(changed) != 1 || changed[0].ID != ms[1].ID || len(modified) != 1 || modified[0] != ms[0].ID {
				t.Fatalf("SetFlagsIfUnchanged() = %v, %v, %v; want the second changed, the first (heard since) modified", changed, modified, err)
			}
			cs, err := sub.Next()
			if err != nil || len(cs) != 1 || len(cs[0].Events) != 1 || cs[0].Events[0].Message.ID != ms[1].ID {
				t.Errorf("published %+v, %v; want the one flag change", cs, err)
			}
		})
	}
}

// failingRelease is a store whose delivery mode release fails.
type failingRelease struct{ *memstore.Store }

func (f failingRelease) ReleaseDelivery(context.Context, string, string, string) error {
	return errors.New("disk on fire")
}

// TestReleaseDeliveryErrorIsLogged checks that a store error in
// ReleaseDelivery, which has no caller to return to, reaches the logger,
// also when Options set none.
func TestReleaseDeliveryErrorIsLogged(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	for _, opts := range []um.Options{{}, {Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))}} {
		svc := newService(t, failingRelease{memstore.New()}, opts)
		if _, err := svc.CreateMailbox(ctx, "1001"); err != nil {
			t.Fatal(err)
		}
		if err := svc.ClaimDelivery("1001", "imap-sync"); err != nil {
			t.Fatal(err)
		}
		svc.ReleaseDelivery("1001", "imap-sync")
	}
	mu.Lock()
	defer mu.Unlock()
	if got := buf.String(); !strings.Contains(got, "level=ERROR") || !strings.Contains(got, "disk on fire") || !strings.Contains(got, "mailbox=1001") {
		t.Errorf("logged %q, want the release's error at Error with its mailbox", got)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestCreateFolderPastMaxFolders checks that CreateFolder past
// Options.MaxFolders fails with a *LimitError that errors.Is matches to
// ErrLimit and that names the limit, and leaves no folder behind; that INBOX
// and Trash do not count; that creating an existing folder at the limit is
// still ErrExists; and that deleting a folder makes room again.
func TestCreateFolderPastMaxFolders(t *testing.T) {
	svc := newService(t, memstore.New(), um.Options{MaxFolders: 2})
	mb, err := svc.CreateMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"Saved", "Work"} {
		if _, err := mb.CreateFolder(ctx, f); err != nil {
			t.Fatalf("CreateFolder(%s) = %v, want it within MaxFolders 2", f, err)
		}
	}
	_, err = mb.CreateFolder(ctx, "Third")
	var le *um.LimitError
	if !errors.Is(err, um.ErrLimit) || !errors.As(err, &le) || le.Max != 2 {
		t.Fatalf("CreateFolder(Third) = %v, want a *LimitError with Max 2 matching ErrLimit", err)
	}
	if !strings.Contains(err.Error(), "at most 2 folders") {
		t.Errorf("CreateFolder(Third) error = %q, want it to say the limit", err)
	}
	if _, err := mb.Folder(ctx, "Third"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Folder(Third) after the refusal = %v, want ErrNotFound", err)
	}
	if _, err := mb.CreateFolder(ctx, "Saved"); !errors.Is(err, um.ErrExists) {
		t.Errorf("CreateFolder(Saved) at the limit = %v, want ErrExists", err)
	}
	if err := mb.DeleteFolder(ctx, "Work"); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.CreateFolder(ctx, "Third"); err != nil {
		t.Errorf("CreateFolder(Third) after a delete = %v, want room again", err)
	}
}

// TestMaxFoldersDefault checks that a zero Options.MaxFolders caps a
// mailbox at DefaultMaxFolders user folders, and that a negative one sets
// no cap.
func TestMaxFoldersDefault(t *testing.T) {
	store := memstore.New()
	mb, err := newService(t, store, um.Options{}).CreateMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	for i := range um.DefaultMaxFolders {
		if _, err := mb.CreateFolder(ctx, fmt.Sprintf("f%d", i)); err != nil {
			t.Fatalf("CreateFolder(#%d) = %v, want DefaultMaxFolders (%d) allowed", i+1, err, um.DefaultMaxFolders)
		}
	}
	if _, err := mb.CreateFolder(ctx, "one more"); !errors.Is(err, um.ErrLimit) {
		t.Fatalf("CreateFolder past DefaultMaxFolders = %v, want ErrLimit", err)
	}
	unlimited, err := newService(t, store, um.Options{MaxFolders: -1}).Mailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unlimited.CreateFolder(ctx, "one more"); err != nil {
		t.Fatalf("CreateFolder with MaxFolders -1 = %v, want no cap", err)
	}
}
