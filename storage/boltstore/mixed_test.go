package boltstore

import (
	"bytes"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// commitOf returns the first commit from events[start:] that references
// content k, failing the test when there is none.
func commitOf(t *testing.T, events []syncEvent, start int, k blobKey) int {
	t.Helper()
	i := slices.IndexFunc(events[start:], func(e syncEvent) bool { return e.kind == "commit" && slices.Contains(e.blobs, k) })
	if i < 0 {
		t.Fatalf("no commit referencing content %x after event %d", k, start)
	}
	return start + i
}

// segmentSyncs counts the fdatasyncs of log segments in events[from:to].
func segmentSyncs(events []syncEvent, from, to int) int {
	n := 0
	for _, e := range events[from:to] {
		if e.kind == "fdatasync" && filepath.Base(filepath.Dir(e.path)) == logDir {
			n++
		}
	}
	return n
}

// TestSmallDepositsBesideOtherWrites checks where a small deposit (content
// kept in the database) goes in a mixed workload: alone between other
// writes it commits with bbolt's syncs and writes no log frame (logging it
// would begin an epoch for one frame); one that follows a deposit goes
// through the log; in a batch with other writes it joins their synced
// commit. Every one is acknowledged durable and survives a reopen byte for
// byte.
func TestSmallDepositsBesideOtherWrites(t *testing.T) {
	rec := recordSyncs(t)
	s := openStore(t)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	contents := map[uuid.UUID][]byte{}
	deposit := func(size int) (um.Message, int) {
		start := len(rec.snapshot())
		c := randomBytes(size)
		m := appendMsg(t, s, "1001", um.Inbox, c)
		contents[m.ID] = c
		return m, start
	}

	// After CreateMailbox, a lone small deposit: synced, no frame.
	m1, start := deposit(2 << 10)
	k, inline := contentKey(t, s, "1001", m1.ID)
	if !inline {
		t.Fatalf("content of 2 KiB is not kept in the database")
	}
	events := rec.snapshot()
	i := commitOf(t, events, start, k)
	if events[i].noSync {
		t.Errorf("a small deposit after another write was committed without sync; want bbolt's syncs")
	}
	if n := segmentSyncs(events, start, len(events)); n != 0 {
		t.Errorf("a small deposit after another write synced %d log segments, want none", n)
	}

	// Right after a deposit, the next one goes through the log.
	m2, start := deposit(2 << 10)
	k, _ = contentKey(t, s, "1001", m2.ID)
	events = rec.snapshot()
	i = commitOf(t, events, start, k)
	if !events[i].noSync {
		t.Errorf("a deposit that follows a deposit was committed synced; want it through the log")
	}
	if n := segmentSyncs(events, start, i); n == 0 {
		t.Errorf("a logged deposit's commit came with no log segment synced before it")
	}

	// A flag change goes through the log too and leaves the epoch open: the
	// next small deposit is logged.
	if _, err := s.SetFlags(ctx, "1001", []uuid.UUID{m1.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}); err != nil {
		t.Fatal(err)
	}
	m3, start := deposit(16 << 10)
	k, _ = contentKey(t, s, "1001", m3.ID)
	events = rec.snapshot()
	if i = commitOf(t, events, start, k); !events[i].noSync {
		t.Errorf("a small deposit after a logged flag change was committed synced; want it through the log")
	}

	// Another write ends the epoch; the next lone small deposit is synced again.
	if _, err := s.CreateFolder(ctx, "1001", "Work"); err != nil {
		t.Fatal(err)
	}
	m4, start := deposit(16 << 10)
	k, _ = contentKey(t, s, "1001", m4.ID)
	events = rec.snapshot()
	if i = commitOf(t, events, start, k); events[i].noSync {
		t.Errorf("a small deposit after a folder was created was committed without sync")
	}

	// Concurrent deposits, small and large, and flag changes: every commit
	// names only synced log bytes, and every deposit is acknowledged.
	start = len(rec.snapshot())
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 8 {
				size := 1 << 10
				if (g+j)%4 == 0 {
					size = inlineMax + 1000
				}
				c := randomBytes(size)
				m, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, bytes.NewReader(c))
				if err != nil {
					t.Error(err)
					return
				}
				rec.ack(m.ID)
				mu.Lock()
				contents[m.ID] = c
				mu.Unlock()
				if _, err := s.SetFlags(ctx, "1001", []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	checkAcksDurable(t, s, rec.snapshot())

	s = reopen(t, s)
	for id, want := range contents {
		if got := readAll(t, s, "1001", id); !bytes.Equal(got, want) {
			t.Errorf("content of %s after reopen: %d bytes, want the %d deposited", id, len(got), len(want))
		}
	}
	msgs, err := s.List(ctx, "1001", um.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(contents) {
		t.Errorf("%d messages after reopen, want %d", len(msgs), len(contents))
	}
}
