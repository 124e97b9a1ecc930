package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// notImplemented reports an optional interface the store lacks. It skips,
// so the run shows the capability as missing rather than as checked.
func notImplemented(t *testing.T, iface string) {
	t.Helper()
	t.Skipf("%s not implemented", iface)
}

// highest returns the HighestModSeq of folder name.
func highest(t testing.TB, s um.Store, name string) uint64 {
	t.Helper()
	return folderOf(t, s, name).HighestModSeq
}

// modSeqStep follows the HighestModSeq of some folders from one change to
// the next.
type modSeqStep struct {
	t     *testing.T
	s     um.Store
	names []string
	last  map[string]uint64
}

func newModSeqStep(t *testing.T, s um.Store, names ...string) *modSeqStep {
	st := &modSeqStep{t: t, s: s, names: names, last: map[string]uint64{}}
	for _, n := range names {
		st.last[n] = highest(t, s, n)
	}
	return st
}

// after checks the folders after change what: those in grew must have a
// larger HighestModSeq than before, the others the same.
func (st *modSeqStep) after(what string, grew ...string) {
	st.t.Helper()
	for _, n := range st.names {
		h := highest(st.t, st.s, n)
		switch {
		case slices.Contains(grew, n) && h <= st.last[n]:
			st.t.Errorf("after %s: HighestModSeq of %s = %d, want more than %d", what, n, h, st.last[n])
		case !slices.Contains(grew, n) && h != st.last[n]:
			st.t.Errorf("after %s: HighestModSeq of %s = %d, want %d unchanged", what, n, h, st.last[n])
		}
		st.last[n] = h
	}
}

// testModSeqer checks the optional um.ModSeqer: every kind of change raises
// the HighestModSeq of the folders it touches and no other, a changed
// message carries its folder's new HighestModSeq, and Vanished reports
// removals after a given ModSeq.
func testModSeqer(t *testing.T, s um.Store) {
	ms, ok := s.(um.ModSeqer)
	if !ok {
		notImplemented(t, "um.ModSeqer")
	}
	mustMailbox(t, s, box)
	if _, err := s.CreateFolder(ctx, box, "Saved"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{um.Inbox, um.Trash, "Saved"} {
		if h := highest(t, s, n); h == 0 {
			t.Errorf("new folder %s: HighestModSeq = 0, want at least 1 (0 means no ModSeq in IMAP)", n)
		}
	}
	st := newModSeqStep(t, s, um.Inbox, um.Trash, "Saved")
	start := st.last[um.Inbox]

	var msgs []um.Message
	for i := range 5 {
		m := mustAppend(t, s, voice(um.Inbox, i), content(10))
		if m.ModSeq <= st.last[um.Inbox] {
			t.Errorf("Append() ModSeq = %d, want more than %d", m.ModSeq, st.last[um.Inbox])
		}
		st.after("Append", um.Inbox)
		if m.ModSeq != st.last[um.Inbox] {
			t.Errorf("Append() ModSeq = %d, want the folder's HighestModSeq %d", m.ModSeq, st.last[um.Inbox])
		}
		msgs = append(msgs, m)
	}
	if got, _ := s.Get(ctx, box, msgs[0].ID); got.ModSeq != msgs[0].ModSeq {
		t.Errorf("Get() ModSeq = %d, want %d as appended", got.ModSeq, msgs[0].ModSeq)
	}

	changed, err := s.SetFlags(ctx, box, []uuid.UUID{msgs[0].ID, msgs[1].ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard})
	if err != nil || len(changed) != 2 {
		t.Fatalf("SetFlags() = %d changed, %v", len(changed), err)
	}
	st.after("SetFlags", um.Inbox)
	for _, m := range changed {
		if m.ModSeq <= msgs[4].ModSeq || m.ModSeq > st.last[um.Inbox] {
			t.Errorf("SetFlags() ModSeq = %d, want in (%d, %d]", m.ModSeq, msgs[4].ModSeq, st.last[um.Inbox])
		}
	}
	list, _ := s.List(ctx, box, um.Inbox)
	if list[0].ModSeq != changed[0].ModSeq || list[2].ModSeq != msgs[2].ModSeq {
		t.Errorf("List() ModSeqs %d, %d; want %d (flags changed) and %d (untouched)", list[0].ModSeq, list[2].ModSeq, changed[0].ModSeq, msgs[2].ModSeq)
	}
	if _, err := s.SetFlags(ctx, box, []uuid.UUID{msgs[0].ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}); err != nil {
		t.Fatal(err)
	}
	st.after("SetFlags that changed nothing")

	moved, err := s.Move(ctx, box, []uuid.UUID{msgs[1].ID}, "Saved", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st.after("Move", um.Inbox, "Saved")
	if moved[0].ModSeq != st.last["Saved"] {
		t.Errorf("Move() ModSeq = %d, want the destination's HighestModSeq %d", moved[0].ModSeq, st.last["Saved"])
	}
	copied, err := s.Copy(ctx, box, []uuid.UUID{msgs[2].ID}, "Saved", []uuid.UUID{uuid.New()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st.after("Copy", "Saved")
	if copied[0].ModSeq != st.last["Saved"] {
		t.Errorf("Copy() ModSeq = %d, want the destination's HighestModSeq %d", copied[0].ModSeq, st.last["Saved"])
	}
	if err := s.Remove(ctx, box, []uuid.UUID{msgs[3].ID}); err != nil {
		t.Fatal(err)
	}
	st.after("Remove", um.Inbox)
	afterRemove := st.last[um.Inbox]
	expunged := []um.UID{msgs[1].UID, msgs[3].UID}
	if x, ok := s.(um.Expunger); ok {
		if _, err := s.SetFlags(ctx, box, []uuid.UUID{msgs[4].ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted}); err != nil {
			t.Fatal(err)
		}
		st.after("SetFlags \\Deleted", um.Inbox)
		afterRemove = st.last[um.Inbox]
		if gone, err := x.Expunge(ctx, box, um.Inbox, nil); err != nil || len(gone) != 1 {
			t.Fatalf("Expunge() = %d messages, %v; want 1", len(gone), err)
		}
		st.after("Expunge", um.Inbox)
		expunged = append(expunged, msgs[4].UID)
	}
	st.after("nothing")

	uids, exact, err := ms.Vanished(ctx, box, um.Inbox, start)
	if err != nil {
		t.Fatal(err)
	}
	if exact > start || fmt.Sprint(uids) != fmt.Sprint(expunged) {
		t.Errorf("Vanished(INBOX, %d) = %v, exact since %d; want %v (moved away, removed, expunged), exact since at most %d", start, uids, exact, expunged, start)
	}
	if uids, exact, err := ms.Vanished(ctx, box, um.Inbox, afterRemove); err != nil || exact > afterRemove || len(uids) != len(expunged)-2 {
		t.Errorf("Vanished(INBOX, %d) = %v, %d, %v; want only what went after that ModSeq: %v", afterRemove, uids, exact, err, expunged[2:])
	}
	if uids, _, err := ms.Vanished(ctx, box, um.Inbox, st.last[um.Inbox]); err != nil || len(uids) != 0 {
		t.Errorf("Vanished(INBOX, HighestModSeq) = %v, %v; want none", uids, err)
	}
	if uids, _, err := ms.Vanished(ctx, box, "Saved", 0); err != nil || len(uids) != 0 {
		t.Errorf("Vanished(Saved, 0) = %v, %v; want none (only arrivals there)", uids, err)
	}
	if _, _, err := ms.Vanished(ctx, box, "Nope", 0); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Vanished(unknown folder) = %v, want ErrNotFound", err)
	}
	if _, _, err := ms.Vanished(ctx, "nobody", um.Inbox, 0); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Vanished(unknown mailbox) = %v, want ErrNotFound", err)
	}

	// A folder created again under an old name starts afresh: a new
	// UIDVALIDITY and no removals of the old one's messages.
	if err := s.DeleteFolder(ctx, box, "Saved"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateFolder(ctx, box, "Saved"); err != nil {
		t.Fatal(err)
	}
	if uids, _, err := ms.Vanished(ctx, box, "Saved", 0); err != nil || len(uids) != 0 {
		t.Errorf("Vanished(recreated Saved, 0) = %v, %v; want none", uids, err)
	}
	if h := highest(t, s, "Saved"); h == 0 {
		t.Errorf("recreated folder: HighestModSeq = 0, want at least 1")
	}
}

// testModSeqReopen checks that ModSeqs and removals survive a restart and
// keep growing after it.
func (su Suite) testModSeqReopen(t *testing.T, s um.Store) {
	if _, ok := s.(um.ModSeqer); !ok {
		notImplemented(t, "um.ModSeqer")
	}
	if su.Reopen == nil {
		t.Skip("Suite.Reopen not set: the store keeps nothing across restarts")
	}
	mustMailbox(t, s, box)
	a := mustAppend(t, s, voice(um.Inbox, 1), content(10))
	b := mustAppend(t, s, voice(um.Inbox, 2), content(10))
	if err := s.Remove(ctx, box, []uuid.UUID{b.ID}); err != nil {
		t.Fatal(err)
	}
	before := highest(t, s, um.Inbox)
	s = su.Reopen(t, s)
	if h := highest(t, s, um.Inbox); h != before {
		t.Errorf("HighestModSeq after reopen = %d, want %d", h, before)
	}
	if got, err := s.Get(ctx, box, a.ID); err != nil || got.ModSeq != a.ModSeq {
		t.Errorf("Get() after reopen: ModSeq %d, %v; want %d", got.ModSeq, err, a.ModSeq)
	}
	if uids, _, err := s.(um.ModSeqer).Vanished(ctx, box, um.Inbox, a.ModSeq); err != nil || len(uids) != 1 || uids[0] != b.UID {
		t.Errorf("Vanished() after reopen = %v, %v; want [%d]", uids, err, b.UID)
	}
	c := mustAppend(t, s, voice(um.Inbox, 3), content(10))
	if c.ModSeq <= before {
		t.Errorf("Append() after reopen: ModSeq %d, want more than %d", c.ModSeq, before)
	}
}

// testFolderSubscriber checks the optional um.FolderSubscriber.
func testFolderSubscriber(t *testing.T, s um.Store) {
	fs, ok := s.(um.FolderSubscriber)
	if !ok {
		notImplemented(t, "um.FolderSubscriber")
	}
	mustMailbox(t, s, box)
	mustMailbox(t, s, "1002")
	subscribed := func(want string) {
		t.Helper()
		got, err := fs.SubscribedFolders(ctx, box)
		if err != nil || fmt.Sprint(got) != want {
			t.Errorf("SubscribedFolders() = %v, %v; want %s", got, err, want)
		}
	}
	subscribed("[INBOX Trash]")
	if _, err := s.CreateFolder(ctx, box, "Saved"); err != nil {
		t.Fatal(err)
	}
	subscribed("[INBOX Trash]") // creating a folder does not subscribe it
	for _, f := range []string{"Saved", "Saved", "Not/There"} {
		if err := fs.SubscribeFolder(ctx, box, f); err != nil {
			t.Errorf("SubscribeFolder(%q) = %v", f, err)
		}
	}
	subscribed("[INBOX Not/There Saved Trash]")
	if err := fs.UnsubscribeFolder(ctx, box, "Nope"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("UnsubscribeFolder(never subscribed) = %v, want ErrNotFound", err)
	}
	if err := fs.UnsubscribeFolder(ctx, box, "Not/There"); err != nil {
		t.Errorf("UnsubscribeFolder() = %v", err)
	}
	if err := fs.UnsubscribeFolder(ctx, box, um.Inbox); err != nil {
		t.Errorf("UnsubscribeFolder(INBOX) = %v", err)
	}
	subscribed("[Saved Trash]")
	// Subscriptions name folders: deleting one keeps its name subscribed.
	if err := s.DeleteFolder(ctx, box, "Saved"); err != nil {
		t.Fatal(err)
	}
	subscribed("[Saved Trash]")
	if got, _ := fs.SubscribedFolders(ctx, "1002"); fmt.Sprint(got) != "[INBOX Trash]" {
		t.Errorf("another mailbox's subscriptions = %v, want [INBOX Trash]", got)
	}
	for i := 0; ; i++ {
		err := fs.SubscribeFolder(ctx, "1002", fmt.Sprintf("f%d", i))
		if errors.Is(err, um.ErrInvalid) {
			if i+2 != um.MaxSubscriptions { // INBOX and Trash count
				t.Errorf("SubscribeFolder() refused subscription %d, want %d (MaxSubscriptions) kept", i+3, um.MaxSubscriptions)
			}
			break
		}
		if err != nil || i > um.MaxSubscriptions {
			t.Fatalf("SubscribeFolder(#%d) = %v, want ErrInvalid past MaxSubscriptions", i+3, err)
		}
	}
	if err := fs.SubscribeFolder(ctx, "1002", "f0"); err != nil {
		t.Errorf("SubscribeFolder(subscribed already) at the cap = %v, want no error", err)
	}
	if err := fs.SubscribeFolder(ctx, "nobody", "x"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("SubscribeFolder(unknown mailbox) = %v, want ErrNotFound", err)
	}
	if err := fs.UnsubscribeFolder(ctx, "nobody", "x"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("UnsubscribeFolder(unknown mailbox) = %v, want ErrNotFound", err)
	}
	if _, err := fs.SubscribedFolders(ctx, "nobody"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("SubscribedFolders(unknown mailbox) = %v, want ErrNotFound", err)
	}
}

// testSubscriberReopen checks that subscriptions survive a restart.
func (su Suite) testSubscriberReopen(t *testing.T, s um.Store) {
	if _, ok := s.(um.FolderSubscriber); !ok {
		notImplemented(t, "um.FolderSubscriber")
	}
	if su.Reopen == nil {
		t.Skip("Suite.Reopen not set: the store keeps nothing across restarts")
	}
	mustMailbox(t, s, box)
	fs := s.(um.FolderSubscriber)
	if err := fs.SubscribeFolder(ctx, box, "Kept"); err != nil {
		t.Fatal(err)
	}
	if err := fs.UnsubscribeFolder(ctx, box, um.Trash); err != nil {
		t.Fatal(err)
	}
	s = su.Reopen(t, s)
	if got, err := s.(um.FolderSubscriber).SubscribedFolders(ctx, box); err != nil || fmt.Sprint(got) != "[INBOX Kept]" {
		t.Errorf("SubscribedFolders() after reopen = %v, %v; want [INBOX Kept]", got, err)
	}
}

// testModSeqPeers checks that appends through several Store values on the
// same data at once (the nodes of a cluster) get ModSeqs in the order of
// their UIDs: a client that saw a folder's HighestModSeq never later finds
// a message added below it.
func (su Suite) testModSeqPeers(t *testing.T, s um.Store) {
	if _, ok := s.(um.ModSeqer); !ok {
		notImplemented(t, "um.ModSeqer")
	}
	if su.Peer == nil {
		t.Skip("Suite.Peer not set: the store serves one process")
	}
	mustMailbox(t, s, box)
	stores := []um.Store{s, su.Peer(t, s), su.Peer(t, s)}
	var wg sync.WaitGroup
	for i, st := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 10 {
				if _, err := st.Append(ctx, box, voice(um.Inbox, 10*i+j), bytes.NewReader(content(10))); err != nil {
					t.Errorf("Append() through Store value %d = %v", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	list, err := s.List(ctx, box, um.Inbox)
	if err != nil || len(list) != 30 {
		t.Fatalf("List() = %d messages, %v; want 30", len(list), err)
	}
	for i := 1; i < len(list); i++ {
		if list[i].ModSeq <= list[i-1].ModSeq {
			t.Errorf("UID %d has ModSeq %d, UID %d has %d: ModSeqs must grow with UIDs", list[i-1].UID, list[i-1].ModSeq, list[i].UID, list[i].ModSeq)
		}
	}
	if h := highest(t, s, um.Inbox); h != list[len(list)-1].ModSeq {
		t.Errorf("HighestModSeq = %d, want the last message's %d", h, list[len(list)-1].ModSeq)
	}
}

// VanishedForgets checks a store that remembers only the last kept
// removals of each folder, where kept is what the store was set to keep (a
// small number, for speed) and which forgets at least every 64 removed
// UIDs: after 3*kept+128 removals, Vanished says it forgot some (an
// exactSince past the first), and from exactSince on its answer is exact,
// every removal after it and nothing else.
func VanishedForgets(t *testing.T, s um.Store, kept int) {
	t.Helper()
	ms, ok := s.(um.ModSeqer)
	if !ok {
		t.Fatal("the store does not implement um.ModSeqer")
	}
	mustMailbox(t, s, box)
	start := highest(t, s, um.Inbox)
	removedAt := map[um.UID]uint64{} // UID -> ModSeq of its removal
	for i := range 3*kept + 128 {
		m := mustAppend(t, s, voice(um.Inbox, i), content(5))
		if err := s.Remove(ctx, box, []uuid.UUID{m.ID}); err != nil {
			t.Fatal(err)
		}
		removedAt[m.UID] = highest(t, s, um.Inbox)
	}
	uids, exact, err := ms.Vanished(ctx, box, um.Inbox, start)
	if err != nil {
		t.Fatal(err)
	}
	if exact <= start {
		t.Fatalf("Vanished() after %d removals with %d kept: exact since %d, want more than %d: the store says it forgot nothing", len(removedAt), kept, exact, start)
	}
	if len(uids) < kept {
		t.Errorf("Vanished() = %d UIDs, want at least the %d kept", len(uids), kept)
	}
	for _, since := range []uint64{exact, exact + 1, exact + uint64(kept)/2} {
		uids, _, err := ms.Vanished(ctx, box, um.Inbox, since)
		if err != nil {
			t.Fatal(err)
		}
		var want []um.UID
		for uid, at := range removedAt {
			if at > since {
				want = append(want, uid)
			}
		}
		slices.Sort(want)
		if fmt.Sprint(uids) != fmt.Sprint(want) {
			t.Errorf("Vanished(since %d, at or after exactSince %d) = %v, want exactly %v", since, exact, uids, want)
		}
	}
}

// testConditionalFlagger checks the optional um.ConditionalFlagger: a
// message changed after since is left alone and reported, the others are
// changed.
func testConditionalFlagger(t *testing.T, s um.Store) {
	cf, ok := s.(um.ConditionalFlagger)
	if !ok {
		notImplemented(t, "um.ConditionalFlagger")
	}
	mustMailbox(t, s, box)
	a := mustAppend(t, s, voice(um.Inbox, 1), content(10))
	b := mustAppend(t, s, voice(um.Inbox, 2), content(10))
	since := b.ModSeq
	if _, err := s.SetFlags(ctx, box, []uuid.UUID{a.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}); err != nil {
		t.Fatal(err)
	}
	flag := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagFlagged}
	changed, modified, err := cf.SetFlagsIfUnchanged(ctx, box, []uuid.UUID{a.ID, b.ID}, flag, since)
	if err != nil {
		t.Fatalf("SetFlagsIfUnchanged() = %v", err)
	}
	if len(modified) != 1 || modified[0] != a.ID || len(changed) != 1 || changed[0].ID != b.ID || !changed[0].Flags.Has(um.FlagFlagged) {
		t.Errorf("SetFlagsIfUnchanged(since %d) = changed %v, modified %v; want b changed and a (changed since) left alone", since, changed, modified)
	}
	if got, _ := s.Get(ctx, box, a.ID); got.Flags.Has(um.FlagFlagged) {
		t.Errorf("a message changed after since was flagged")
	}
	if changed[0].ModSeq <= since {
		t.Errorf("changed message's ModSeq = %d, want more than %d", changed[0].ModSeq, since)
	}
	h := highest(t, s, um.Inbox)
	changed, modified, err = cf.SetFlagsIfUnchanged(ctx, box, []uuid.UUID{a.ID, b.ID}, um.FlagOp{Mode: um.FlagsRemove, Flags: um.FlagFlagged}, h)
	if err != nil || len(modified) != 0 || len(changed) != 1 || changed[0].ID != b.ID {
		t.Errorf("SetFlagsIfUnchanged(since HighestModSeq) = %v, %v, %v; want b changed, none modified", changed, modified, err)
	}
	if _, _, err := cf.SetFlagsIfUnchanged(ctx, box, []uuid.UUID{a.ID, uuid.New()}, flag, h+10); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("SetFlagsIfUnchanged(unknown message) = %v, want ErrNotFound", err)
	}
	if got, _ := s.Get(ctx, box, a.ID); got.Flags.Has(um.FlagFlagged) {
		t.Errorf("a failed SetFlagsIfUnchanged changed a message")
	}
}
