package forward_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/forward"
	"github.com/embeddedum/um/storage/memstore"
)

// plainStore is a store with none of the optional interfaces: no leases,
// no state, no delivery modes in the store, as a host's own store may be.
type plainStore struct{ um.Store }

// TestStateFileMigratedIntoStore: a state file an earlier Forwarder left
// in StateDir (on a store that kept no state) is moved into a store that
// keeps it, once: what it says was sent is not sent again, what was
// deposited since is, and the file is gone.
func TestStateFileMigratedIntoStore(t *testing.T) {
	dir := t.TempDir()
	ms := memstore.New()
	ctx := context.Background()
	srv := startSMTP(t)
	fx := &fixture{smtp: srv}

	// The earlier version: state in files.
	svc1, err := um.New(plainStore{ms}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fx.svc = svc1
	mb, _ := svc1.CreateMailbox(ctx, "1001")
	fw1 := fx.newForwarder(t, dir)
	if err := fw1.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	m1 := fx.waitFor(t, mb)
	fw1.Close()
	svc1.Close()
	file := filepath.Join(dir, "1001.json")
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("the file-backed Forwarder left no state file: %v", err)
	}

	// The same data, now with a store that keeps the state.
	svc2, err := um.New(ms, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc2.Close()
	fx.svc = svc2
	mb, _ = svc2.Mailbox(ctx, "1001")
	m2 := fx.deposit(t, mb, "deposited while stopped")
	fw2 := fx.newForwarder(t, dir)
	if err := fw2.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	m3 := fx.waitFor(t, mb)
	wantIDs(t, srv.ids(t), m1, m2, m3)
	// The server records a message before the Forwarder has its answer.
	eventually(t, "Status().Sent = 2", func() bool { return fw2.Status("1001").Sent == 2 })
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file after the migration: %v, want it removed", err)
	}
	data, err := ms.GetState(ctx, "1001", forward.Purpose)
	if err != nil {
		t.Fatalf("GetState() after the migration = %v", err)
	}
	var st struct{ UID um.UID }
	if err := json.Unmarshal(data, &st); err != nil || st.UID != m3.UID {
		t.Errorf("the store's state = %s (%v), want the watermark at UID %d", data, err, m3.UID)
	}
	fw2.Close()

	// Later runs read the store, StateDir or not.
	fw3 := fx.newForwarder(t, "")
	if err := fw3.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	m4 := fx.waitFor(t, mb)
	wantIDs(t, srv.ids(t), m1, m2, m3, m4)
}

// TestCloseKeepsTheDeliveryMode: closing a Forwarder (a restart) keeps the
// mailbox's claim of the email-forward mode, so the mailbox cannot be
// synced meanwhile; Remove releases it.
func TestCloseKeepsTheDeliveryMode(t *testing.T) {
	fx := newFixture(t, nil)
	ctx := context.Background()
	fx.svc.CreateMailbox(ctx, "1001")
	if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := fx.fw.Close(); err != nil {
		t.Fatal(err)
	}
	if mode, nodes, err := fx.svc.DeliveryMode(ctx, "1001"); err != nil || mode != forward.Mode || len(nodes) != 1 {
		t.Fatalf("DeliveryMode() after Close = %q %v %v, want %s held", mode, nodes, err, forward.Mode)
	}
	if err := fx.svc.ClaimDelivery("1001", "imap-sync"); !errors.Is(err, um.ErrModeConflict) || !strings.Contains(err.Error(), forward.Mode) {
		t.Fatalf("claiming imap-sync after Close = %v, want ErrModeConflict naming %s", err, forward.Mode)
	}
	fw := fx.newForwarder(t, "")
	if err := fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatalf("Add() after a restart = %v", err)
	}
	if err := fw.Remove("1001"); err != nil {
		t.Fatal(err)
	}
	if mode, _, err := fx.svc.DeliveryMode(ctx, "1001"); err != nil || mode != "" {
		t.Fatalf("DeliveryMode() after Remove = %q %v, want none", mode, err)
	}
}

// TestStatusOwner: on one node the Forwarder owns every mailbox it
// forwards, and Status says so under the node's name; a mailbox not
// forwarded has no owner.
func TestStatusOwner(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store um.Store
	}{{"leaser", memstore.New()}, {"no leaser", plainStore{memstore.New()}}} {
		t.Run(tc.name, func(t *testing.T) {
			svc, err := um.New(tc.store, &um.Options{Node: "pbx1"})
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			fx := &fixture{svc: svc, smtp: startSMTP(t)}
			ctx := context.Background()
			mb, _ := svc.CreateMailbox(ctx, "1001")
			fw := fx.newForwarder(t, "")
			if err := fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
				t.Fatal(err)
			}
			eventually(t, "pbx1 to own 1001", func() bool { st := fw.Status("1001"); return st.Owner == "pbx1" && st.Owned })
			fx.waitFor(t, mb)
			if st := fw.Status("1002"); st.Owner != "" || st.Owned {
				t.Errorf("Status(1002) = %+v, want no owner", st)
			}
		})
	}
}

// fencingStore is a memstore whose PutState can be made to answer as if
// another node had taken the lease over.
type fencingStore struct {
	*memstore.Store
	mu       sync.Mutex
	refuse   bool
	refused  int
	accepted int // state writes let through
}

func (s *fencingStore) PutState(ctx context.Context, l um.Lease, data []byte) error {
	s.mu.Lock()
	refuse := s.refuse
	if refuse {
		s.refused++
	} else {
		s.accepted++
	}
	s.mu.Unlock()
	if refuse {
		return fmt.Errorf("test: %w", um.ErrLeaseHeld)
	}
	return s.Store.PutState(ctx, l, data)
}

func (s *fencingStore) set(refuse bool) {
	s.mu.Lock()
	s.refuse = refuse
	s.mu.Unlock()
}

// TestLeaseLostStopsTheSubmission: when the store refuses the state write
// that precedes the end of a message's data (this node's lease passed on),
// the Forwarder drops the connection without ending the data, so the
// server keeps nothing, and stops; once its writes are accepted again the
// message goes out, once.
func TestLeaseLostStopsTheSubmission(t *testing.T) {
	fs := &fencingStore{Store: memstore.New()}
	svc, err := um.New(fs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	fx := &fixture{svc: svc, smtp: startSMTP(t)}
	ctx := context.Background()
	mb, _ := svc.CreateMailbox(ctx, "1001")
	fw, err := forward.New(svc, forward.Options{
		Addr: fx.smtp.Addr, TLSConfig: &tls.Config{RootCAs: fx.smtp.Roots},
		Username: "pbx", Password: "secret", From: "voicemail@pbx.example.com",
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, LeaseTTL: 600 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the lease taken", func() bool { return fw.Status("1001").Owned })
	// The work saves its state once it holds the lease; refused, that
	// save would stop the work before any submission, which is not what
	// this test is about.
	eventually(t, "the first state write", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return fs.accepted > 0
	})
	fs.set(true)
	m1 := fx.deposit(t, mb, "while the lease is lost")
	eventually(t, "a submission started", func() bool {
		return fx.smtp.Mails() > 0
	})
	eventually(t, "the state write refused again after the work restarted", func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return fs.refused >= 3
	})
	if n := len(fx.smtp.Messages()); n != 0 || fw.Status("1001").Sent != 0 {
		t.Fatalf("with the lease lost: the server kept %d messages, Status().Sent = %d; want none", n, fw.Status("1001").Sent)
	}
	fs.set(false)
	m2 := fx.waitFor(t, mb)
	wantIDs(t, fx.smtp.ids(t), m1, m2)
}
