package boltstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// blobOfID returns the content key of message id of mailbox 1001.
func blobOfID(t *testing.T, tx *bolt.Tx, id uuid.UUID) blobKey {
	t.Helper()
	mb, err := getMailbox(tx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	_, r, err := mb.find(id)
	if err != nil {
		t.Fatal(err)
	}
	return r.blob
}

// The tests here take copies of a live store's directory: what a copy holds
// is what the disk holds when the process is killed (the page cache
// survives). For a power loss they put back into um.db what it held at an
// earlier synced moment, keeping only the meta pages of later, unsynced
// commits, which is the worst a power loss can leave: meta pages that name
// pages never written.

// copyDir copies the store directory src to a new temporary directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func readDB(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// losePower makes um.db in dir what a power loss can leave: the pages of
// synced, as read at the last synced moment, and zeros past them, under
// the meta pages of metas, read later.
func losePower(t *testing.T, dir string, synced, metas []byte) {
	t.Helper()
	path := filepath.Join(dir, DBFile)
	cur := readDB(t, dir)
	b := make([]byte, max(len(cur), len(synced)))
	copy(b, synced)
	ps := os.Getpagesize()
	copy(b[:2*ps], metas[:2*ps])
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

type deposited struct {
	m       um.Message
	content []byte
}

// depositMix deposits n messages one after another, every third small
// enough for the database.
func depositMix(t *testing.T, s *Store, n int) []deposited {
	t.Helper()
	var out []deposited
	for i := range n {
		size := 48000 + i*1000
		if i%3 == 2 {
			size = 2000
		}
		c := randomBytes(size)
		out = append(out, deposited{appendMsg(t, s, "1001", um.Inbox, c), c})
	}
	return out
}

// expectExactly checks that INBOX of s holds exactly want, with their UIDs
// and contents, and that Check finds nothing wrong.
func expectExactly(t *testing.T, s *Store, want []deposited) {
	t.Helper()
	msgs, err := s.List(ctx, "1001", um.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != len(want) {
		t.Fatalf("List() = %d messages, want %d", len(msgs), len(want))
	}
	for i, d := range want {
		if msgs[i].ID != d.m.ID || msgs[i].UID != d.m.UID || msgs[i].ModSeq != d.m.ModSeq {
			t.Errorf("message %d is %s UID %d ModSeq %d, want %s UID %d ModSeq %d", i, msgs[i].ID, msgs[i].UID, msgs[i].ModSeq, d.m.ID, d.m.UID, d.m.ModSeq)
		}
		if b := readAll(t, s, "1001", d.m.ID); !bytes.Equal(b, d.content) {
			t.Errorf("content of UID %d is %d bytes and differs, want %d", d.m.UID, len(b), len(d.content))
		}
	}
	if rep := mustCheck(t, s); len(rep.Problems) != 0 {
		t.Errorf("Check() = %v, want no problems", rep.Problems)
	}
}

// TestPowerLossMidEpoch loses power after deposits whose commits were not
// synced, in the two worst ways: um.db holds the state before them under
// meta pages that name pages never written; or it holds every page they
// wrote under the meta pages from before them (which is where a commit
// that reused the old state's pages would show). Open must go back to the
// log's base and replay, and every deposit is there with the UID and ModSeq
// it was acknowledged with.
func TestPowerLossMidEpoch(t *testing.T) {
	for _, metasLost := range []bool{false, true} {
		name := map[bool]string{false: "pages lost", true: "meta pages lost"}[metasLost]
		t.Run(name, func(t *testing.T) {
			s := openStore(t)
			newMailbox(t, s, "1001")
			synced := readDB(t, s.dir) // the mailbox's commit was synced
			// Enough deposits for bbolt to reuse free pages, were the
			// base's pages not kept.
			want := depositMix(t, s, 40)
			crash := copyDir(t, s.dir)
			if metasLost {
				losePower(t, crash, readDB(t, s.dir), synced)
			} else {
				losePower(t, crash, synced, readDB(t, s.dir))
			}

			c := openAt(t, crash)
			expectExactly(t, c, want)
			// The store goes on: a new deposit takes the next UID.
			m := appendMsg(t, c, "1001", um.Inbox, randomBytes(30000))
			if m.UID != want[len(want)-1].m.UID+1 {
				t.Errorf("UID after recovery = %d, want %d", m.UID, want[len(want)-1].m.UID+1)
			}
		})
	}
}

// TestTornLogTail loses power while a batch was being written to the log:
// its frame is cut short, and its commit never happened. Replay stops at
// the torn frame, and the deposits before it are all there.
func TestTornLogTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		tear func(t *testing.T, path string, l segLoc)
	}{
		{"cut in the content", func(t *testing.T, path string, l segLoc) {
			if err := os.Truncate(path, l.off+l.size/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"flipped byte in the content", func(t *testing.T, path string, l segLoc) {
			flipByte(t, path, l.off+l.size-1)
		}},
		{"cut in the head", func(t *testing.T, path string, l segLoc) {
			if err := os.Truncate(path, l.off-5); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			newMailbox(t, s, "1001")
			synced := readDB(t, s.dir)
			want := depositMix(t, s, 10)
			metas := readDB(t, s.dir) // after the 10th commit
			torn := appendMsg(t, s, "1001", um.Inbox, randomBytes(100000))
			var l segLoc
			if err := s.view(ctx, func(tx *bolt.Tx) error {
				var ok bool
				var err error
				l, ok, err = segLocOf(tx, blobOfID(t, tx, torn.ID))
				if !ok && err == nil {
					err = errors.New("not in a segment")
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
			crash := copyDir(t, s.dir)
			losePower(t, crash, synced, metas)
			tc.tear(t, segPath(crash, l.seq), l)

			c := openAt(t, crash)
			expectExactly(t, c, want)
			if _, err := c.Get(ctx, "1001", torn.ID); !errors.Is(err, um.ErrNotFound) {
				t.Errorf("Get() of the torn deposit = %v, want ErrNotFound", err)
			}
			// Recovery ended the epoch: new deposits go to a new segment
			// and survive a restart.
			m := appendMsg(t, c, "1001", um.Inbox, randomBytes(70000))
			c = reopen(t, c)
			expectExactly(t, c, append(want, deposited{m, readAll(t, c, "1001", m.ID)}))
		})
	}
}

// TestKilledMidEpochGarbageTail kills the process (um.db keeps its unsynced
// commits) while a batch's write had put part of a frame after the last
// whole one: Open trusts nothing past the whole frames, and loses nothing
// acknowledged.
func TestKilledMidEpochGarbageTail(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	want := depositMix(t, s, 8)
	crash := copyDir(t, s.dir)
	seqs, err := segments(crash)
	if err != nil || len(seqs) == 0 {
		t.Fatalf("segments = %v, %v", seqs, err)
	}
	var last uint64
	for _, seq := range seqs {
		if fi, err := os.Stat(segPath(crash, seq)); err == nil && fi.Size() > 0 {
			last = seq
		}
	}
	f, err := os.OpenFile(segPath(crash, last), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	part := depositHead(kindDeposit, 1<<40, 1, 0, &deposit{mailbox: "1001", folder: um.Inbox, rec: &record{m: um.Message{ID: uuid.New(), Size: 1000}}, data: chunks{make([]byte, 1000)}})
	f.Write(append(part, make([]byte, 300)...)) // 700 bytes of the content missing
	f.Close()

	c := openAt(t, crash)
	expectExactly(t, c, want)
}

// TestReplayInterrupted crashes during replay, after some of the frames
// were applied again: the next Open replays from the base once more and
// ends in the same state, with the same UIDs and ModSeqs.
func TestReplayInterrupted(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	synced := readDB(t, s.dir)
	want := depositMix(t, s, 12)
	crash := copyDir(t, s.dir)
	losePower(t, crash, synced, readDB(t, s.dir))

	errStop := errors.New("stopped by the test")
	replayed = func(n int) error {
		if n == 5 {
			return errStop
		}
		return nil
	}
	_, err := Open(crash, nil)
	replayed = nil
	if !errors.Is(err, errStop) {
		t.Fatalf("Open() with replay stopped after 5 transactions = %v, want the stop", err)
	}
	// What the interrupted replay committed, unsynced, is what a kill
	// leaves; a power loss would leave less.
	c := openAt(t, crash)
	expectExactly(t, c, want)
	c = reopen(t, c)
	expectExactly(t, c, want)
}

// TestFlagsEndEpoch checks that a write that is not a deposit, committed
// with bbolt's syncs, is never undone by a replay of the deposits before
// it, also when power is lost right after: um.db then holds its state and
// Open trusts it.
func TestFlagsEndEpoch(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	want := depositMix(t, s, 6)
	changed, err := s.SetFlags(ctx, "1001", []uuid.UUID{want[2].m.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard})
	if err != nil || len(changed) != 1 {
		t.Fatalf("SetFlags() = %v, %v", changed, err)
	}
	want[2].m = changed[0]
	if err := s.Remove(ctx, "1001", []uuid.UUID{want[4].m.ID}); err != nil {
		t.Fatal(err)
	}
	want = append(want[:4], want[5:]...)
	synced := readDB(t, s.dir)
	crash := copyDir(t, s.dir)
	losePower(t, crash, synced, synced)

	c := openAt(t, crash)
	expectExactly(t, c, want)
	msgs, err := c.List(ctx, "1001", um.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	if msgs[2].Flags&um.FlagHeard == 0 {
		t.Errorf("flags of UID %d after recovery = %v, want \\Seen kept", msgs[2].UID, msgs[2].Flags)
	}
}

// TestContentTooLarge checks that a content past the bound of a log frame
// is refused with ErrInvalid and stores nothing, rather than writing a
// frame that replay would take for the end of the log.
func TestContentTooLarge(t *testing.T) {
	old := maxContent
	maxContent = 1 << 20
	t.Cleanup(func() { maxContent = old })
	s := openStore(t)
	newMailbox(t, s, "1001")
	_, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, bytes.NewReader(make([]byte, 1<<20+1)))
	if !errors.Is(err, um.ErrInvalid) {
		t.Fatalf("Append() of %d bytes = %v, want ErrInvalid", 1<<20+1, err)
	}
	want := depositMix(t, s, 2)
	s = reopen(t, s)
	expectExactly(t, s, want)
}

// depositConcurrently deposits n messages of 60 KB from each of g
// goroutines and returns them in UID order.
func depositConcurrently(t *testing.T, s *Store, g, n int) []deposited {
	t.Helper()
	var mu sync.Mutex
	var out []deposited
	var wg sync.WaitGroup
	for range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n {
				c := randomBytes(60000)
				m, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, bytes.NewReader(c))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				out = append(out, deposited{m, c})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b deposited) int { return int(a.m.UID) - int(b.m.UID) })
	return out
}

// TestPowerLossLanes loses power after concurrent deposits, whose batches
// spread over several segments of the epoch: replay merges them back into
// the order they were applied in, so every deposit keeps its UID. With one
// of those segments lost, replay stops at the first batch that had a frame
// in it, and keeps every batch before.
func TestPowerLossLanes(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	synced := readDB(t, s.dir)
	want := depositConcurrently(t, s, 8, 6)
	crash := copyDir(t, s.dir)
	losePower(t, crash, synced, readDB(t, s.dir))
	lost := copyDir(t, crash)

	c := openAt(t, crash)
	expectExactly(t, c, want)

	// The base's segment is the epoch's first; its second lane the next.
	var base uint64
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		l, _, err := segLocOf(tx, blobOfID(t, tx, want[0].m.ID))
		base = l.seq
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lane := base + 1
	first := -1
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		for i, d := range want {
			if l, _, err := segLocOf(tx, blobOfID(t, tx, d.m.ID)); err != nil {
				return err
			} else if l.seq == lane && first < 0 {
				first = i
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if first < 1 {
		t.Fatalf("no deposit but the first went to a second lane (first at %d)", first)
	}
	if err := os.Remove(segPath(lost, lane)); err != nil {
		t.Fatal(err)
	}
	// The deposit at first is its batch's second (lane 1 of the batch).
	c = openAt(t, lost)
	expectExactly(t, c, want[:first-1])
}

// TestBackupHasNoLog checks that a backup of a store whose contents are in
// log segments holds them as content files of their own and no log: the
// restored store reads every content, names no segment, and has none.
func TestBackupHasNoLog(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	want := depositMix(t, s, 6)
	dir := filepath.Join(t.TempDir(), "backup")
	info, err := s.Backup(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Files != 4 {
		t.Errorf("Backup() copied %d content files, want the 4 deposits larger than inlineMax", info.Files)
	}
	if _, err := os.Stat(filepath.Join(dir, logDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("backup has a log directory (%v)", err)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(ctx, dir, restored); err != nil {
		t.Fatal(err)
	}
	r := openAt(t, restored)
	for _, d := range want {
		if b := readAll(t, r, "1001", d.m.ID); !bytes.Equal(b, d.content) {
			t.Errorf("restored content of UID %d differs", d.m.UID)
		}
	}
	if n := countSegments(t, r); n != 0 {
		t.Errorf("restored store has %d log segments before any deposit, want 0", n)
	}
	if err := r.view(ctx, func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketSeg).Stats().KeyN; n != 0 {
			t.Errorf("restored database maps %d contents to log segments, want 0", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
