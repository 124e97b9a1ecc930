// Package storetest is the conformance suite for um.Store implementations.
// A store package, the host's own included, runs it from a test:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t testing.TB) um.Store {
//			s, err := mystore.Open(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Each subtest gets a store of its own from newStore. The suite checks the
// contract written on um.Store: errors, UID order and monotonicity,
// UIDVALIDITY stability, atomic flag updates under concurrency, content round
// trips byte for byte, moves and copies, concurrent appends, and ErrClosed
// after Close.
//
// It also checks each optional interface the store implements (Counter,
// Expunger, ModSeqer, ConditionalFlagger, FolderSubscriber, Limiter,
// DeliveryModes, Leaser, OutwardState, Watcher). One the store does not
// implement shows as a skipped subtest whose message names it ("um.Watcher not implemented"): missing, not passed. A durable
// store passes a Suite with Reopen, so that what must survive a restart
// (ModSeqs, subscriptions, delivery modes) is checked; a store shared by
// several nodes passes Peer (and CutFeed for its Watcher), so that limits,
// delivery modes, ModSeqs and the change feed are checked across Store
// values on the same data.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// NewStore returns a fresh, empty store for one subtest.
type NewStore func(t testing.TB) um.Store

// Run runs every conformance test against stores made by newStore. It is
// Suite{New: newStore}.Run: a durable or shared store passes a Suite with
// Reopen and Peer set, so that what must survive a restart or reach another
// node is checked too.
func Run(t *testing.T, newStore NewStore) {
	Suite{New: newStore}.Run(t)
}

// Suite describes a store to the conformance suite. Only New is required.
type Suite struct {
	// New returns a fresh, empty store for one subtest.
	New NewStore
	// Reopen closes s and returns a new Store value on the same data, as
	// after a restart. Nil for a store that keeps nothing across restarts
	// (memstore): the subtests that need it then report themselves skipped.
	Reopen func(t testing.TB, s um.Store) um.Store
	// Peer returns a second Store value on the same data as s, open at the
	// same time, as another node of a cluster would have. Nil for a store
	// that one process serves alone.
	Peer func(t testing.TB, s um.Store) um.Store
	// CutFeed breaks the change feed of s (its notification connection)
	// the way a network fault would, for a store that implements
	// um.Watcher. Nil leaves the report of a lost feed unchecked.
	CutFeed func(t testing.TB, s um.Store)
}

// Run runs every conformance test. An optional interface the store does not
// implement is reported as a skipped subtest that names it, never as passed.
func (su Suite) Run(t *testing.T) {
	if su.New == nil {
		t.Fatal("storetest: Suite.New is nil")
	}
	newStore := su.New
	tests := []struct {
		name string
		fn   func(t *testing.T, s um.Store)
	}{
		{"Mailboxes", testMailboxes},
		{"Folders", testFolders},
		{"NotFound", testNotFound},
		{"AppendList", testAppendList},
		{"ContentRoundTrip", testContentRoundTrip},
		{"FailingReader", testFailingReader},
		{"UIDsNeverReused", testUIDsNeverReused},
		{"UIDValidityNewOnRecreate", testUIDValidityNewOnRecreate},
		{"Flags", testFlags},
		{"ConcurrentFlags", testConcurrentFlags},
		{"Move", testMove},
		{"MoveAtomic", testMoveAtomic},
		{"Copy", testCopy},
		{"Remove", testRemove},
		{"RenameDeleteFolder", testRenameDeleteFolder},
		{"ConcurrentAppends", testConcurrentAppends},
		{"ContextCanceled", testContextCanceled},
		{"ReturnsCopies", testReturnsCopies},
		{"Counter", testCounter},
		{"Expunger", testExpunger},
		{"ModSeqer", testModSeqer},
		{"ModSeqerReopen", su.testModSeqReopen},
		{"ModSeqerPeers", su.testModSeqPeers},
		{"ConditionalFlagger", testConditionalFlagger},
		{"FolderSubscriber", testFolderSubscriber},
		{"FolderSubscriberReopen", su.testSubscriberReopen},
		{"Limiter", testLimiter},
		{"LimiterConcurrent", su.testLimiterConcurrent},
		{"DeliveryModes", su.testDeliveryModes},
		{"DeliveryModesShared", su.testDeliveryModesShared},
		{"Leaser", testLeaser},
		{"LeaserShared", su.testLeaserShared},
		{"OutwardState", su.testOutwardState},
		{"Watcher", su.testWatcher},
		{"WatcherLostFeed", su.testWatcherLostFeed},
		{"Closed", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

var ctx = context.Background()

const box = "1001"

func mustMailbox(t testing.TB, s um.Store, name string) {
	t.Helper()
	if err := s.CreateMailbox(ctx, name); err != nil {
		t.Fatalf("CreateMailbox(%q) = %v", name, err)
	}
}

func voice(folder string, n int) um.Message {
	return um.Message{
		ID:           uuid.New(),
		Folder:       folder,
		CallerNumber: fmt.Sprintf("+49301234%03d", n),
		CallerName:   "Caller",
		Time:         time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Duration:     time.Duration(n+1) * time.Second,
		AudioType:    "audio/wav",
		Added:        time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC),
	}
}

func content(n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(int64(n))).Read(b)
	return b
}

func mustAppend(t testing.TB, s um.Store, m um.Message, data []byte) um.Message {
	t.Helper()
	got, err := s.Append(ctx, box, m, bytes.NewReader(data))
	if err != nil {
		t.Fatalf("Append() = %v", err)
	}
	return got
}

func folderOf(t testing.TB, s um.Store, name string) um.Folder {
	t.Helper()
	fs, err := s.Folders(ctx, box)
	if err != nil {
		t.Fatalf("Folders() = %v", err)
	}
	for _, f := range fs {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("Folders() has no %q: %v", name, fs)
	return um.Folder{}
}

func testMailboxes(t *testing.T, s um.Store) {
	mustMailbox(t, s, "1002")
	mustMailbox(t, s, box)
	if err := s.CreateMailbox(ctx, box); !errors.Is(err, um.ErrExists) {
		t.Errorf("CreateMailbox(existing) = %v, want ErrExists", err)
	}
	names, err := s.Mailboxes(ctx)
	if err != nil || fmt.Sprint(names) != "[1001 1002]" {
		t.Errorf("Mailboxes() = %v, %v, want [1001 1002]", names, err)
	}
	fs, err := s.Folders(ctx, box)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 2 || fs[0].Name != um.Inbox || fs[1].Name != um.Trash {
		t.Errorf("Folders() of a new mailbox = %v, want INBOX and Trash", fs)
	}
	for _, f := range fs {
		if f.UIDValidity == 0 || f.UIDNext != 1 {
			t.Errorf("folder %q: UIDValidity %d, UIDNext %d; want nonzero and 1", f.Name, f.UIDValidity, f.UIDNext)
		}
	}
}

func testFolders(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	f, err := s.CreateFolder(ctx, box, "Saved")
	if err != nil {
		t.Fatalf("CreateFolder() = %v", err)
	}
	if f.Name != "Saved" || f.UIDValidity == 0 || f.UIDNext != 1 {
		t.Errorf("CreateFolder() = %+v", f)
	}
	if _, err := s.CreateFolder(ctx, box, "Saved"); !errors.Is(err, um.ErrExists) {
		t.Errorf("CreateFolder(existing) = %v, want ErrExists", err)
	}
	if _, err := s.CreateFolder(ctx, box, um.Inbox); !errors.Is(err, um.ErrExists) {
		t.Errorf("CreateFolder(INBOX) = %v, want ErrExists", err)
	}
	fs, _ := s.Folders(ctx, box)
	var names []string
	for _, f := range fs {
		names = append(names, f.Name)
	}
	if fmt.Sprint(names) != "[INBOX Saved Trash]" {
		t.Errorf("Folders() = %v, want [INBOX Saved Trash]", names)
	}
	seen := map[uint32]bool{}
	for _, f := range fs {
		if seen[f.UIDValidity] {
			t.Errorf("UIDValidity %d given to two folders", f.UIDValidity)
		}
		seen[f.UIDValidity] = true
	}
	for _, name := range []string{um.Inbox, um.Trash} {
		if err := s.DeleteFolder(ctx, box, name); !errors.Is(err, um.ErrReserved) {
			t.Errorf("DeleteFolder(%s) = %v, want ErrReserved", name, err)
		}
		if err := s.RenameFolder(ctx, box, name, "X"); !errors.Is(err, um.ErrReserved) {
			t.Errorf("RenameFolder(%s) = %v, want ErrReserved", name, err)
		}
	}
}

func testNotFound(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	id := uuid.New()
	checks := map[string]error{}
	_, checks["Folders(unknown mailbox)"] = s.Folders(ctx, "nobody")
	_, checks["List(unknown mailbox)"] = s.List(ctx, "nobody", um.Inbox)
	_, checks["List(unknown folder)"] = s.List(ctx, box, "Nope")
	_, checks["Append(unknown folder)"] = s.Append(ctx, box, voice("Nope", 1), bytes.NewReader(nil))
	_, checks["Append(unknown mailbox)"] = s.Append(ctx, "nobody", voice(um.Inbox, 1), bytes.NewReader(nil))
	_, checks["Get(unknown id)"] = s.Get(ctx, box, id)
	_, checks["Open(unknown id)"] = s.Open(ctx, box, id)
	_, checks["SetFlags(unknown id)"] = s.SetFlags(ctx, box, []uuid.UUID{id}, um.FlagOp{Flags: um.FlagHeard})
	_, checks["Move(unknown id)"] = s.Move(ctx, box, []uuid.UUID{id}, um.Trash, time.Now())
	_, checks["Copy(unknown id)"] = s.Copy(ctx, box, []uuid.UUID{id}, um.Trash, []uuid.UUID{uuid.New()}, time.Now())
	checks["Remove(unknown id)"] = s.Remove(ctx, box, []uuid.UUID{id})
	checks["RenameFolder(unknown)"] = s.RenameFolder(ctx, box, "Nope", "Other")
	checks["DeleteFolder(unknown)"] = s.DeleteFolder(ctx, box, "Nope")
	_, checks["CreateFolder(unknown mailbox)"] = s.CreateFolder(ctx, "nobody", "X")
	for name, err := range checks {
		if !errors.Is(err, um.ErrNotFound) {
			t.Errorf("%s = %v, want ErrNotFound", name, err)
		}
	}
	m := mustAppend(t, s, voice(um.Inbox, 1), content(10))
	if _, err := s.Move(ctx, box, []uuid.UUID{m.ID}, "Nope", time.Now()); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Move(to unknown folder) = %v, want ErrNotFound", err)
	}
}

func testAppendList(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	want := voice(um.Inbox, 7)
	want.Urgent = true
	want.Flags = um.FlagFlagged
	want.Keywords = []string{"$Label1"}
	want.Transcript = "call me back"
	got := mustAppend(t, s, want, content(123))
	if got.UID != 1 || got.Size != 123 || got.ID != want.ID || got.Folder != um.Inbox {
		t.Errorf("Append() = UID %d size %d id %v folder %q; want 1, 123, %v, INBOX", got.UID, got.Size, got.ID, got.Folder, want.ID)
	}
	want.UID, want.Size = 1, 123
	list, err := s.List(ctx, box, um.Inbox)
	if err != nil || len(list) != 1 {
		t.Fatalf("List() = %v, %v", list, err)
	}
	if diff := compare(list[0], want); diff != "" {
		t.Errorf("List()[0] differs from what was appended: %s", diff)
	}
	g, err := s.Get(ctx, box, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := compare(g, want); diff != "" {
		t.Errorf("Get() differs from what was appended: %s", diff)
	}
	if f := folderOf(t, s, um.Inbox); f.UIDNext != 2 {
		t.Errorf("UIDNext after one append = %d, want 2", f.UIDNext)
	}
	raw := um.Message{ID: uuid.New(), Folder: um.Trash, Raw: true, Flags: um.FlagHeard | um.FlagDraft, Added: time.Date(2025, 5, 5, 5, 5, 5, 0, time.UTC)}
	gr := mustAppend(t, s, raw, []byte("Subject: hi\r\n\r\nbody\r\n"))
	if !gr.Raw || gr.Flags != raw.Flags || !gr.Added.Equal(raw.Added) {
		t.Errorf("Append(raw) = %+v", gr)
	}
}

func compare(got, want um.Message) string {
	switch {
	case got.ID != want.ID:
		return fmt.Sprintf("ID %v, want %v", got.ID, want.ID)
	case got.Folder != want.Folder || got.UID != want.UID:
		return fmt.Sprintf("at %s/%d, want %s/%d", got.Folder, got.UID, want.Folder, want.UID)
	case got.Flags != want.Flags || !um.SameKeywords(got.Keywords, want.Keywords):
		return fmt.Sprintf("flags %v %v, want %v %v", got.Flags, got.Keywords, want.Flags, want.Keywords)
	case got.Urgent != want.Urgent || got.CallerNumber != want.CallerNumber || got.CallerName != want.CallerName:
		return fmt.Sprintf("caller %q %q urgent %v, want %q %q %v", got.CallerNumber, got.CallerName, got.Urgent, want.CallerNumber, want.CallerName, want.Urgent)
	case !got.Time.Equal(want.Time) || got.Duration != want.Duration || !got.Added.Equal(want.Added):
		return fmt.Sprintf("time %v duration %v added %v, want %v %v %v", got.Time, got.Duration, got.Added, want.Time, want.Duration, want.Added)
	case got.AudioType != want.AudioType || got.Transcript != want.Transcript || got.Size != want.Size || got.Raw != want.Raw:
		return fmt.Sprintf("type %q transcript %q size %d raw %v, want %q %q %d %v", got.AudioType, got.Transcript, got.Size, got.Raw, want.AudioType, want.Transcript, want.Size, want.Raw)
	}
	return ""
}

func readAll(t testing.TB, s um.Store, id uuid.UUID) []byte {
	t.Helper()
	rc, err := s.Open(ctx, box, id)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read content: %v", err)
	}
	return b
}

func testContentRoundTrip(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	for _, n := range []int{0, 1, 4095, 4096, 4097, 1 << 20, 3<<20 + 17} {
		data := content(n)
		m := mustAppend(t, s, voice(um.Inbox, n), data)
		got := readAll(t, s, m.ID)
		if sha256.Sum256(got) != sha256.Sum256(data) {
			t.Errorf("content of %d bytes came back as %d different bytes", n, len(got))
		}
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func testFailingReader(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	boom := errors.New("line dropped")
	m := voice(um.Inbox, 1)
	_, err := s.Append(ctx, box, m, &failingReader{data: content(100000), err: boom})
	if !errors.Is(err, boom) {
		t.Errorf("Append(failing reader) = %v, want the reader's error", err)
	}
	if list, _ := s.List(ctx, box, um.Inbox); len(list) != 0 {
		t.Errorf("after a failed Append, List() = %d messages, want 0", len(list))
	}
	if _, err := s.Get(ctx, box, m.ID); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("after a failed Append, Get() = %v, want ErrNotFound", err)
	}
	// The failed append may consume a UID, but a later one still works.
	if got := mustAppend(t, s, voice(um.Inbox, 2), content(5)); got.UID == 0 {
		t.Errorf("Append after failure got UID 0")
	}
}

func testUIDsNeverReused(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	var last um.UID
	for i := 0; i < 20; i++ {
		m := mustAppend(t, s, voice(um.Inbox, i), content(3))
		if m.UID <= last {
			t.Fatalf("append %d got UID %d after %d: not increasing", i, m.UID, last)
		}
		last = m.UID
		if i%3 == 0 {
			if err := s.Remove(ctx, box, []uuid.UUID{m.ID}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if f := folderOf(t, s, um.Inbox); f.UIDNext <= last {
		t.Errorf("UIDNext %d after removing the last message, want > %d: UIDs must not be reused", f.UIDNext, last)
	}
	list, _ := s.List(ctx, box, um.Inbox)
	for i := 1; i < len(list); i++ {
		if list[i].UID <= list[i-1].UID {
			t.Fatalf("List() not in UID order: %d then %d", list[i-1].UID, list[i].UID)
		}
	}
	if len(list) != 13 {
		t.Errorf("List() = %d messages, want 13", len(list))
	}
}

func testUIDValidityNewOnRecreate(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	f1, err := s.CreateFolder(ctx, box, "Saved")
	if err != nil {
		t.Fatal(err)
	}
	if got := folderOf(t, s, "Saved"); got.UIDValidity != f1.UIDValidity {
		t.Errorf("UIDValidity changed from %d to %d without a change", f1.UIDValidity, got.UIDValidity)
	}
	if err := s.DeleteFolder(ctx, box, "Saved"); err != nil {
		t.Fatal(err)
	}
	f2, err := s.CreateFolder(ctx, box, "Saved")
	if err != nil {
		t.Fatal(err)
	}
	if f2.UIDValidity == f1.UIDValidity {
		t.Errorf("recreated folder kept UIDValidity %d; clients would trust stale UIDs", f1.UIDValidity)
	}
}

func testFlags(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	a := mustAppend(t, s, voice(um.Inbox, 1), content(1))
	b := mustAppend(t, s, voice(um.Inbox, 2), content(1))
	tests := []struct {
		name     string
		op       um.FlagOp
		ids      []uuid.UUID
		changed  int
		flags    um.Flags
		keywords []string
	}{
		{"add seen", um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}, []uuid.UUID{a.ID, b.ID}, 2, um.FlagHeard, nil},
		{"add seen again changes nothing", um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}, []uuid.UUID{a.ID, b.ID}, 0, um.FlagHeard, nil},
		{"add keyword", um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted, Keywords: []string{"$Junk", "$Label1"}}, []uuid.UUID{a.ID, b.ID}, 2, um.FlagHeard | um.FlagDeleted, []string{"$Junk", "$Label1"}},
		{"remove", um.FlagOp{Mode: um.FlagsRemove, Flags: um.FlagHeard, Keywords: []string{"$junk"}}, []uuid.UUID{a.ID, b.ID}, 2, um.FlagDeleted, []string{"$Label1"}},
		{"replace", um.FlagOp{Mode: um.FlagsReplace, Flags: um.FlagAnswered}, []uuid.UUID{a.ID, b.ID}, 2, um.FlagAnswered, nil},
	}
	for _, tt := range tests {
		changed, err := s.SetFlags(ctx, box, tt.ids, tt.op)
		if err != nil {
			t.Fatalf("%s: SetFlags() = %v", tt.name, err)
		}
		if len(changed) != tt.changed {
			t.Errorf("%s: SetFlags() changed %d, want %d", tt.name, len(changed), tt.changed)
		}
		for _, id := range tt.ids {
			m, _ := s.Get(ctx, box, id)
			if m.Flags != tt.flags || !um.SameKeywords(m.Keywords, tt.keywords) {
				t.Errorf("%s: Get() flags = %v %v, want %v %v", tt.name, m.Flags, m.Keywords, tt.flags, tt.keywords)
			}
		}
	}
}

func testConcurrentFlags(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	m := mustAppend(t, s, voice(um.Inbox, 1), content(1))
	all := []um.Flags{um.FlagHeard, um.FlagAnswered, um.FlagFlagged, um.FlagDeleted, um.FlagDraft}
	const rounds = 20
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		for _, f := range all {
			wg.Add(1)
			go func(f um.Flags) {
				defer wg.Done()
				if _, err := s.SetFlags(ctx, box, []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: f, Keywords: []string{fmt.Sprintf("k%d", f)}}); err != nil {
					t.Error(err)
				}
			}(f)
		}
		wg.Wait()
		got, _ := s.Get(ctx, box, m.ID)
		if got.Flags != um.FlagHeard|um.FlagAnswered|um.FlagFlagged|um.FlagDeleted|um.FlagDraft || len(got.Keywords) != len(all) {
			t.Fatalf("round %d: concurrent adds left %v %v: an update was lost", r, got.Flags, got.Keywords)
		}
		if _, err := s.SetFlags(ctx, box, []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsReplace}); err != nil {
			t.Fatal(err)
		}
	}
}

func testMove(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	a := mustAppend(t, s, voice(um.Inbox, 1), content(11))
	b := mustAppend(t, s, voice(um.Inbox, 2), content(22))
	if _, err := s.SetFlags(ctx, box, []uuid.UUID{a.ID}, um.FlagOp{Flags: um.FlagHeard}); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 2, 2, 2, 2, 2, 0, time.UTC)
	moved, err := s.Move(ctx, box, []uuid.UUID{b.ID, a.ID}, um.Trash, now)
	if err != nil {
		t.Fatalf("Move() = %v", err)
	}
	if len(moved) != 2 || moved[0].ID != b.ID || moved[1].ID != a.ID {
		t.Fatalf("Move() returned %v, want b then a", moved)
	}
	if moved[0].UID != 1 || moved[1].UID != 2 || moved[0].Folder != um.Trash {
		t.Errorf("moved UIDs %d, %d in %q; want 1, 2 in Trash", moved[0].UID, moved[1].UID, moved[0].Folder)
	}
	if !moved[1].Flags.Has(um.FlagHeard) || !moved[1].Added.Equal(now) {
		t.Errorf("moved message lost its flags or Added: %+v", moved[1])
	}
	if inbox, _ := s.List(ctx, box, um.Inbox); len(inbox) != 0 {
		t.Errorf("INBOX after moving all = %d messages", len(inbox))
	}
	if got := readAll(t, s, a.ID); !bytes.Equal(got, content(11)) {
		t.Errorf("content changed by a move")
	}
	back, err := s.Move(ctx, box, []uuid.UUID{a.ID}, um.Inbox, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if back[0].UID != 3 {
		t.Errorf("moved back into INBOX with UID %d, want 3 (UIDs never reused)", back[0].UID)
	}
	// A zero now keeps Added: IMAP MOVE keeps INTERNALDATE.
	if got, err := s.Get(ctx, box, a.ID); err != nil || !back[0].Added.Equal(now) || !got.Added.Equal(now) {
		t.Errorf("Move(now zero) gave Added %v, stored %v (%v); want it kept at %v", back[0].Added, got.Added, err, now)
	}
}

func testMoveAtomic(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	a := mustAppend(t, s, voice(um.Inbox, 1), content(1))
	_, err := s.Move(ctx, box, []uuid.UUID{a.ID, uuid.New()}, um.Trash, time.Now())
	if !errors.Is(err, um.ErrNotFound) {
		t.Fatalf("Move(with unknown id) = %v, want ErrNotFound", err)
	}
	if got, _ := s.Get(ctx, box, a.ID); got.Folder != um.Inbox || got.UID != a.UID {
		t.Errorf("a failed Move() moved a message to %s/%d", got.Folder, got.UID)
	}
}

func testCopy(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	if _, err := s.CreateFolder(ctx, box, "Saved"); err != nil {
		t.Fatal(err)
	}
	a := mustAppend(t, s, voice(um.Inbox, 1), content(33))
	nid := uuid.New()
	copies, err := s.Copy(ctx, box, []uuid.UUID{a.ID}, "Saved", []uuid.UUID{nid}, time.Now())
	if err != nil {
		t.Fatalf("Copy() = %v", err)
	}
	if len(copies) != 1 || copies[0].ID != nid || copies[0].Folder != "Saved" || copies[0].UID != 1 || copies[0].CallerNumber != a.CallerNumber {
		t.Fatalf("Copy() = %+v", copies)
	}
	// A zero now keeps Added: IMAP COPY keeps INTERNALDATE.
	kept, err := s.Copy(ctx, box, []uuid.UUID{a.ID}, "Saved", []uuid.UUID{uuid.New()}, time.Time{})
	if err != nil || len(kept) != 1 || !kept[0].Added.Equal(a.Added) {
		t.Errorf("Copy(now zero) = %+v, %v; want Added kept at %v", kept, err, a.Added)
	} else if got, err := s.Get(ctx, box, kept[0].ID); err != nil || !got.Added.Equal(a.Added) {
		t.Errorf("stored copy has Added %v (%v), want %v", got.Added, err, a.Added)
	}
	if err := s.Remove(ctx, box, []uuid.UUID{a.ID}); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, s, nid); !bytes.Equal(got, content(33)) {
		t.Errorf("copy's content lost when the original was removed")
	}
}

func testRemove(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	a := mustAppend(t, s, voice(um.Inbox, 1), content(5))
	b := mustAppend(t, s, voice(um.Inbox, 2), content(5))
	if err := s.Remove(ctx, box, []uuid.UUID{a.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(ctx, box, a.ID); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Open(removed) = %v, want ErrNotFound", err)
	}
	list, _ := s.List(ctx, box, um.Inbox)
	if len(list) != 1 || list[0].ID != b.ID {
		t.Errorf("List() after Remove = %v", list)
	}
	if err := s.Remove(ctx, box, []uuid.UUID{b.ID, uuid.New()}); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Remove(with unknown id) = %v, want ErrNotFound", err)
	}
	if _, err := s.Get(ctx, box, b.ID); err != nil {
		t.Errorf("a failed Remove() removed a message: %v", err)
	}
}

func testRenameDeleteFolder(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	f, _ := s.CreateFolder(ctx, box, "Old")
	if _, err := s.CreateFolder(ctx, box, "Taken"); err != nil {
		t.Fatal(err)
	}
	a := mustAppend(t, s, voice("Old", 1), content(3))
	if err := s.RenameFolder(ctx, box, "Old", "Taken"); !errors.Is(err, um.ErrExists) {
		t.Errorf("RenameFolder(onto existing) = %v, want ErrExists", err)
	}
	if err := s.RenameFolder(ctx, box, "Old", "New"); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, box, a.ID)
	if err != nil || got.Folder != "New" || got.UID != a.UID {
		t.Errorf("after rename, Get() = %s/%d, %v; want New/%d", got.Folder, got.UID, err, a.UID)
	}
	if nf := folderOf(t, s, "New"); nf.UIDValidity != f.UIDValidity || nf.UIDNext != 2 {
		t.Errorf("renamed folder = %+v, want UIDValidity %d UIDNext 2 kept", nf, f.UIDValidity)
	}
	if err := s.DeleteFolder(ctx, box, "New"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, box, a.ID); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("message of a deleted folder: Get() = %v, want ErrNotFound", err)
	}
}

func testConcurrentAppends(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	const n = 40
	var wg sync.WaitGroup
	uids := make(chan um.UID, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			m, err := s.Append(ctx, box, voice(um.Inbox, i), bytes.NewReader(content(1000+i)))
			if err != nil {
				t.Error(err)
				return
			}
			uids <- m.UID
		}(i)
	}
	wg.Wait()
	close(uids)
	seen := map[um.UID]bool{}
	for u := range uids {
		if seen[u] {
			t.Errorf("UID %d given twice", u)
		}
		seen[u] = true
	}
	list, _ := s.List(ctx, box, um.Inbox)
	if len(list) != n {
		t.Fatalf("List() = %d messages after %d concurrent appends", len(list), n)
	}
	for _, m := range list {
		if got := readAll(t, s, m.ID); len(got) != int(m.Size) {
			t.Errorf("message %d: %d content bytes, Size %d", m.UID, len(got), m.Size)
		}
	}
}

func testContextCanceled(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	c, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.List(c, box, um.Inbox); err == nil {
		t.Errorf("List(canceled ctx) = nil error")
	}
	if _, err := s.Append(c, box, voice(um.Inbox, 1), bytes.NewReader(content(10))); err == nil {
		t.Errorf("Append(canceled ctx) = nil error")
	}
	if list, _ := s.List(ctx, box, um.Inbox); len(list) != 0 {
		t.Errorf("Append with a canceled context stored a message")
	}
}

func testReturnsCopies(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	m := voice(um.Inbox, 1)
	m.Keywords = []string{"$A"}
	got := mustAppend(t, s, m, content(1))
	got.Keywords[0] = "$Changed"
	list, _ := s.List(ctx, box, um.Inbox)
	list[0].Keywords[0] = "$Changed"
	again, _ := s.Get(ctx, box, got.ID)
	if len(again.Keywords) != 1 || again.Keywords[0] != "$A" {
		t.Errorf("changing a returned message changed the store: %v", again.Keywords)
	}
}

// testCounter checks the optional um.Counter against the counts um derives
// by listing.
func testCounter(t *testing.T, s um.Store) {
	c, ok := s.(um.Counter)
	if !ok {
		notImplemented(t, "um.Counter") // um falls back to listing
	}
	mustMailbox(t, s, box)
	if _, err := s.CreateFolder(ctx, box, "Saved"); err != nil {
		t.Fatal(err)
	}
	var ms []um.Message
	for i := 0; i < 8; i++ {
		m := voice(um.Inbox, i)
		m.Urgent = i%3 == 0
		if m.Urgent {
			m.Flags = um.FlagFlagged // as um deposits it
		}
		ms = append(ms, mustAppend(t, s, m, content(10)))
	}
	mustAppend(t, s, um.Message{ID: uuid.New(), Folder: "Saved", Raw: true}, []byte("Subject: x\r\n\r\n"))
	s.SetFlags(ctx, box, []uuid.UUID{ms[0].ID, ms[1].ID, ms[2].ID}, um.FlagOp{Flags: um.FlagHeard})
	s.SetFlags(ctx, box, []uuid.UUID{ms[3].ID}, um.FlagOp{Flags: um.FlagDeleted})
	// Urgency is \Flagged: starred by a client, unstarred urgent ones.
	s.SetFlags(ctx, box, []uuid.UUID{ms[1].ID, ms[7].ID}, um.FlagOp{Flags: um.FlagFlagged})
	s.SetFlags(ctx, box, []uuid.UUID{ms[6].ID}, um.FlagOp{Mode: um.FlagsRemove, Flags: um.FlagFlagged})
	s.Move(ctx, box, []uuid.UUID{ms[4].ID}, um.Trash, time.Now())
	s.Move(ctx, box, []uuid.UUID{ms[5].ID}, "Saved", time.Now())
	got, err := c.CountMWI(ctx, box)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := um.CountMWI(ctx, s, box)
	got.Mailbox = want.Mailbox
	if got != want {
		t.Errorf("CountMWI() = %v, want %v (what listing INBOX gives)", got, want)
	}
	gu, err := c.Usage(ctx, box)
	if err != nil {
		t.Fatal(err)
	}
	if wu, _ := um.CountUsage(ctx, s, box); gu != wu {
		t.Errorf("Usage() = %+v, want %+v (what listing gives)", gu, wu)
	}
	if _, err := c.CountMWI(ctx, "nobody"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("CountMWI(unknown mailbox) = %v, want ErrNotFound", err)
	}
}

// testExpunger checks the optional um.Expunger: only \Deleted messages of
// the folder, only the UIDs named, atomically with the check.
func testExpunger(t *testing.T, s um.Store) {
	x, ok := s.(um.Expunger)
	if !ok {
		notImplemented(t, "um.Expunger") // um lists and removes instead
	}
	mustMailbox(t, s, box)
	var ms []um.Message
	for i := 0; i < 4; i++ {
		ms = append(ms, mustAppend(t, s, voice(um.Inbox, i), content(10+i)))
	}
	trashed := mustAppend(t, s, voice(um.Trash, 9), content(5))
	del := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted}
	if _, err := s.SetFlags(ctx, box, []uuid.UUID{ms[0].ID, ms[1].ID, ms[3].ID, trashed.ID}, del); err != nil {
		t.Fatal(err)
	}
	gone, err := x.Expunge(ctx, box, um.Inbox, []um.UID{ms[1].UID, ms[2].UID, ms[3].UID})
	if err != nil {
		t.Fatalf("Expunge(UIDs) = %v", err)
	}
	if len(gone) != 2 || gone[0].ID != ms[1].ID || gone[1].ID != ms[3].ID || gone[0].UID != ms[1].UID {
		t.Fatalf("Expunge(UIDs 2:4) removed %+v, want messages 2 and 4 (3 is not \\Deleted)", gone)
	}
	if _, err := s.Get(ctx, box, ms[3].ID); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("expunged message still found: %v", err)
	}
	if _, err := s.Open(ctx, box, ms[1].ID); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("expunged message's content still opens: %v", err)
	}
	gone, err = x.Expunge(ctx, box, um.Inbox, nil)
	if err != nil || len(gone) != 1 || gone[0].ID != ms[0].ID {
		t.Fatalf("Expunge(all) = %+v, %v; want message 1", gone, err)
	}
	list, _ := s.List(ctx, box, um.Inbox)
	if len(list) != 1 || list[0].ID != ms[2].ID {
		t.Errorf("INBOX after expunges = %+v, want message 3 only", list)
	}
	if _, err := s.Get(ctx, box, trashed.ID); err != nil {
		t.Errorf("a \\Deleted message of another folder was expunged: %v", err)
	}
	if gone, err := x.Expunge(ctx, box, um.Inbox, nil); err != nil || len(gone) != 0 {
		t.Errorf("Expunge with nothing \\Deleted = %+v, %v; want none", gone, err)
	}
	if _, err := x.Expunge(ctx, box, "Nope", nil); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Expunge(unknown folder) = %v, want ErrNotFound", err)
	}
	if f := folderOf(t, s, um.Inbox); f.UIDNext != 5 {
		t.Errorf("UIDNext after expunges = %d, want 5: UIDs are never reused", f.UIDNext)
	}
}
