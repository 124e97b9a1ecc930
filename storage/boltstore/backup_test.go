package boltstore

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/testwait"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

func randomContent(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// newMailbox creates mailbox name in s.
func newMailbox(t testing.TB, s *Store, name string) {
	t.Helper()
	if err := s.CreateMailbox(ctx, name); err != nil {
		t.Fatalf("CreateMailbox(%s) = %v", name, err)
	}
}

func mustCheck(t testing.TB, s *Store) *CheckReport {
	t.Helper()
	rep, err := s.Check(ctx)
	if err != nil {
		t.Fatalf("Check() = %v", err)
	}
	return rep
}

// TestCheckNamesDamage damages one message's content in each way a disk or
// a careless hand can, and checks that Check names that message, its
// folder, its UID and what is wrong, and nothing else.
func TestCheckNamesDamage(t *testing.T) {
	tests := []struct {
		name   string
		inline bool
		damage func(t *testing.T, s *Store, m um.Message)
		kind   ProblemKind
		detail string
	}{
		{"truncated file", false, func(t *testing.T, s *Store, m um.Message) {
			if err := os.Truncate(s.contentPath(t, m), 1000); err != nil {
				t.Fatal(err)
			}
		}, ContentSize, "1000 bytes, the record says 48000"},
		{"flipped byte in file", false, func(t *testing.T, s *Store, m um.Message) {
			flipByte(t, s.contentPath(t, m), 20000)
		}, ContentChecksum, "CRC-32C"},
		{"deleted file", false, func(t *testing.T, s *Store, m um.Message) {
			if err := os.Remove(s.contentPath(t, m)); err != nil {
				t.Fatal(err)
			}
		}, ContentMissing, "the record says 48000 bytes"},
		{"flipped byte in the database", true, func(t *testing.T, s *Store, m um.Message) {
			s.rewriteContent(t, m, func(v []byte) []byte { v[10] ^= 0x40; return v })
		}, ContentChecksum, "CRC-32C"},
		{"short content in the database", true, func(t *testing.T, s *Store, m um.Message) {
			s.rewriteContent(t, m, func(v []byte) []byte { return v[:100] })
		}, ContentSize, "100 bytes, the record says 2000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			newMailbox(t, s, "1001")
			newMailbox(t, s, "1002")
			size := 48000
			if tt.inline {
				size = 2000
			}
			var msgs []um.Message
			for range 3 {
				msgs = append(msgs, appendMsg(t, s, "1001", um.Inbox, randomContent(t, size)))
				appendMsg(t, s, "1002", um.Inbox, randomContent(t, size))
			}
			if rep := mustCheck(t, s); rep.Messages != 6 || len(rep.Problems) != 0 || rep.Unverified != 0 {
				t.Fatalf("Check() before damage = %+v, want 6 messages, no problems", rep)
			}
			victim := msgs[1]
			tt.damage(t, s, victim)
			rep := mustCheck(t, s)
			if len(rep.Problems) != 1 {
				t.Fatalf("Check().Problems = %v, want one", rep.Problems)
			}
			p := rep.Problems[0]
			if p.Mailbox != "1001" || p.Folder != um.Inbox || p.UID != victim.UID || p.ID != victim.ID || p.Kind != tt.kind {
				t.Errorf("Problem = %+v, want mailbox 1001 folder INBOX UID %d ID %s kind %v", p, victim.UID, victim.ID, tt.kind)
			}
			if !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("Problem.Detail = %q, want it to say %q", p.Detail, tt.detail)
			}
			if tt.inline != (p.Path == "") {
				t.Errorf("Problem.Path = %q for a content in the database: %v", p.Path, tt.inline)
			}
			err := rep.Err()
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), fmt.Sprintf("mailbox 1001 folder INBOX UID %d", victim.UID)) {
				t.Errorf("CheckReport.Err() = %v, want ErrDamaged naming mailbox 1001 folder INBOX UID %d", err, victim.UID)
			}
		})
	}
}

// contentPath is the content file of m, a message of mailbox 1001.
//
// A content in a log segment is first moved to a file of its own, as a
// restored store or one written before the log keeps it, so that the test
// can damage it alone.
func (s *Store) contentPath(t testing.TB, m um.Message) string {
	t.Helper()
	var k blobKey
	var l segLoc
	var inSeg bool
	if err := s.db.View(func(tx *bolt.Tx) (err error) {
		k = blobOf(t, tx, m)
		l, inSeg, err = segLocOf(tx, k)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	path := s.blobPath(k)
	if inSeg {
		rc, err := s.openSeg(l)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketSeg).Delete(k[:]) }); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// TestCheckNamesSegmentDamage damages contents where deposits keep them,
// in a log segment: a flipped byte in one names that message alone, with
// the segment and offset; a lost segment names every message in it.
func TestCheckNamesSegmentDamage(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	var msgs []um.Message
	for range 3 {
		msgs = append(msgs, appendMsg(t, s, "1001", um.Inbox, randomContent(t, 48000)))
	}
	var locs []segLoc
	if err := s.db.View(func(tx *bolt.Tx) error {
		for _, m := range msgs {
			l, ok, err := segLocOf(tx, blobOf(t, tx, m))
			if err != nil || !ok {
				t.Fatalf("content of UID %d is not in a log segment (%v)", m.UID, err)
			}
			locs = append(locs, l)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	flipByte(t, s.segPath(locs[1].seq), locs[1].off+100)
	rep := mustCheck(t, s)
	wantPath := fmt.Sprintf("log/%016x:%d", locs[1].seq, locs[1].off)
	if len(rep.Problems) != 1 || rep.Problems[0].UID != msgs[1].UID || rep.Problems[0].Kind != ContentChecksum || rep.Problems[0].Path != wantPath {
		t.Fatalf("Check() after a flipped byte in UID %d = %v, want its checksum wrong in %s", msgs[1].UID, rep.Problems, wantPath)
	}
	if err := os.Remove(s.segPath(locs[0].seq)); err != nil {
		t.Fatal(err)
	}
	rep = mustCheck(t, s)
	if len(rep.Problems) != 3 {
		t.Fatalf("Check() after the segment was deleted = %v, want the 3 messages in it", rep.Problems)
	}
	for _, p := range rep.Problems {
		if p.Kind != ContentMissing {
			t.Errorf("problem %v, want content missing", p)
		}
	}
}

// rewriteContent changes a content kept in the database behind the store's
// back, as a damaged page would.
func (s *Store) rewriteContent(t testing.TB, m um.Message, change func([]byte) []byte) {
	t.Helper()
	if err := s.db.Update(func(tx *bolt.Tx) error {
		k := blobOf(t, tx, m)
		b := tx.Bucket(bucketContents)
		return b.Put(k[:], change(bytes.Clone(b.Get(k[:]))))
	}); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestCheckContentWithoutSum: a content stored before checksums existed
// has no sum. Check counts it as unverified, reports no problem for it,
// and still finds it truncated.
func TestCheckContentWithoutSum(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	m := appendMsg(t, s, "1001", um.Inbox, randomContent(t, 48000))
	appendMsg(t, s, "1001", um.Inbox, randomContent(t, 48000))
	if err := s.db.Update(func(tx *bolt.Tx) error {
		k := blobOf(t, tx, m)
		return tx.Bucket(bucketSums).Delete(k[:])
	}); err != nil {
		t.Fatal(err)
	}
	if rep := mustCheck(t, s); rep.Messages != 2 || rep.Unverified != 1 || len(rep.Problems) != 0 {
		t.Fatalf("Check() = %+v, want 2 messages, 1 unverified, no problems", rep)
	}
	flipByte(t, s.contentPath(t, m), 100)
	if rep := mustCheck(t, s); len(rep.Problems) != 0 {
		t.Fatalf("Check() after a flipped byte in an unverified content = %v, want none (it cannot tell)", rep.Problems)
	}
	if err := os.Truncate(s.contentPath(t, m), 10); err != nil {
		t.Fatal(err)
	}
	if rep := mustCheck(t, s); len(rep.Problems) != 1 || rep.Problems[0].Kind != ContentSize || rep.Problems[0].UID != m.UID {
		t.Fatalf("Check() after truncation = %v, want content size wrong for UID %d", rep.Problems, m.UID)
	}
}

func blobOf(t testing.TB, tx *bolt.Tx, m um.Message) blobKey {
	t.Helper()
	mb, err := getMailbox(tx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	_, r, err := mb.find(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	return r.blob
}

// TestSumsFollowContents: the sums bucket holds one entry per content and
// loses it with the last message naming the content.
func TestSumsFollowContents(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	a := appendMsg(t, s, "1001", um.Inbox, randomContent(t, 48000))
	b := appendMsg(t, s, "1001", um.Inbox, randomContent(t, 500))
	copies, err := s.Copy(ctx, "1001", []uuid.UUID{a.ID}, um.Trash, []uuid.UUID{uuid.New()}, a.Added)
	if err != nil {
		t.Fatal(err)
	}
	sums := func() int {
		n := 0
		s.db.View(func(tx *bolt.Tx) error { n = tx.Bucket(bucketSums).Stats().KeyN; return nil })
		return n
	}
	if n := sums(); n != 2 {
		t.Fatalf("sums after 2 contents and a copy = %d, want 2", n)
	}
	if err := s.Remove(ctx, "1001", []uuid.UUID{a.ID, b.ID}); err != nil {
		t.Fatal(err)
	}
	if n := sums(); n != 1 {
		t.Fatalf("sums after removing the inline content and one of two copies = %d, want 1", n)
	}
	if err := s.Remove(ctx, "1001", []uuid.UUID{copies[0].ID}); err != nil {
		t.Fatal(err)
	}
	if n := sums(); n != 0 {
		t.Fatalf("sums after removing every message = %d, want 0", n)
	}
}

// TestBackupKeepsFilePurgedMeanwhile purges a message between the
// backup's snapshot, which names it, and the copy of its content file: the
// file must wait for the backup, so the backup holds the message whole,
// and be deleted from the store once the backup is done.
func TestBackupKeepsFilePurgedMeanwhile(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	content := randomContent(t, 100000)
	m := appendMsg(t, s, "1001", um.Inbox, content)
	path := s.contentPath(t, m)
	backupSnapshotted = func() {
		if err := s.Remove(ctx, "1001", []uuid.UUID{m.ID}); err != nil {
			t.Errorf("Remove() during backup = %v", err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("content file after a purge during backup: %v, want it kept until the backup is done", err)
		}
	}
	t.Cleanup(func() { backupSnapshotted = nil })
	dir := filepath.Join(t.TempDir(), "backup")
	info, err := s.Backup(ctx, dir)
	backupSnapshotted = nil
	if err != nil {
		t.Fatalf("Backup() = %v", err)
	}
	if info.Messages != 1 || info.Files != 1 {
		t.Errorf("Backup() = %+v, want 1 message, 1 file", info)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("content file of the purged message after the backup: %v, want it deleted", err)
	}
	restored := filepath.Join(t.TempDir(), "restored")
	rep, err := Restore(ctx, dir, restored)
	if err != nil || rep.Messages != 1 {
		t.Fatalf("Restore() = %+v, %v, want 1 message", rep, err)
	}
	r := openAt(t, restored)
	if got := readAll(t, r, "1001", m.ID); !bytes.Equal(got, content) {
		t.Errorf("restored content is %d bytes, differs from the %d deposited", len(got), len(content))
	}
}

// TestBackupDuringDeposits takes a backup while depositors and a purger
// run, restores it, and checks that the restored store is sound and holds,
// byte for byte, every message acknowledged before the backup began.
func TestBackupDuringDeposits(t *testing.T) {
	s := openStore(t)
	const depositors = 4
	for i := range depositors {
		newMailbox(t, s, fmt.Sprint(1001+i))
	}
	newMailbox(t, s, "2000")
	type acked struct {
		mailbox string
		id      uuid.UUID
		content []byte
	}
	var (
		mu   sync.Mutex
		done []acked
		stop atomic.Bool
		wg   sync.WaitGroup
		// enough is closed at the 40th acknowledged deposit, failed at
		// the first error.
		enough     = make(chan struct{})
		failed     = make(chan struct{})
		failedOnce sync.Once
	)
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		failedOnce.Do(func() { close(failed) })
	}
	sizes := []int{48000, 700, 130000, 16 << 10, 16<<10 + 1}
	for i := range depositors {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mailbox := fmt.Sprint(1001 + i)
			for n := 0; !stop.Load(); n++ {
				c := randomContent(t, sizes[(n+i)%len(sizes)])
				m, err := s.Append(ctx, mailbox, um.Message{ID: uuid.New(), Folder: um.Inbox, AudioType: "audio/wav"}, bytes.NewReader(c))
				if err != nil {
					fail("Append() = %v", err)
					return
				}
				mu.Lock()
				done = append(done, acked{mailbox, m.ID, c})
				if len(done) == 40 {
					close(enough)
				}
				mu.Unlock()
			}
		}()
	}
	// The purger deposits and removes at once, so removals commit while the
	// backup runs and delete files its snapshot may name.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			m, err := s.Append(ctx, "2000", um.Message{ID: uuid.New(), Folder: um.Trash}, bytes.NewReader(randomContent(t, 64000)))
			if err == nil {
				err = s.Remove(ctx, "2000", []uuid.UUID{m.ID})
			}
			if err != nil {
				fail("purger: %v", err)
				return
			}
		}
	}()
	select {
	case <-enough:
	case <-failed:
		stop.Store(true)
		wg.Wait()
		t.FailNow()
	}
	mu.Lock()
	before := append([]acked(nil), done...)
	mu.Unlock()
	dir := filepath.Join(t.TempDir(), "backup")
	info, err := s.Backup(ctx, dir)
	mu.Lock()
	during := len(done) - len(before)
	mu.Unlock()
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatalf("Backup() = %v", err)
	}
	t.Logf("backup of %d messages, %d files, %d bytes; %d deposits acknowledged while it ran", info.Messages, info.Files, info.Bytes, during)
	if info.Messages < len(before) {
		t.Errorf("Backup() has %d messages, want at least the %d acknowledged before it", info.Messages, len(before))
	}
	restored := filepath.Join(t.TempDir(), "restored")
	rep, err := Restore(ctx, dir, restored)
	if err != nil {
		t.Fatalf("Restore() = %v", err)
	}
	if rep.Messages != info.Messages || len(rep.Problems) != 0 {
		t.Errorf("Restore() report = %+v, want %d messages, no problems", rep, info.Messages)
	}
	r := openAt(t, restored)
	for _, a := range before {
		if got := readAll(t, r, a.mailbox, a.id); !bytes.Equal(got, a.content) {
			t.Fatalf("restored message %s of %s: %d bytes differ from the %d deposited", a.id, a.mailbox, len(got), len(a.content))
		}
	}
	if rep := mustCheck(t, s); len(rep.Problems) != 0 {
		t.Errorf("Check() of the source after the backup = %v, want none", rep.Problems)
	}
}

// TestBackupRefuses: Backup and Restore never write into a directory that
// holds anything, so neither can overwrite a store.
func TestBackupRefuses(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	appendMsg(t, s, "1001", um.Inbox, randomContent(t, 30000))
	if _, err := s.Backup(ctx, s.dir); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Backup(into the store itself) = %v, want fs.ErrExist", err)
	}
	dir := filepath.Join(t.TempDir(), "backup")
	if _, err := s.Backup(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backup(ctx, dir); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Backup(into a backup) = %v, want fs.ErrExist", err)
	}
	if _, err := Restore(ctx, dir, s.dir); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Restore(over a store) = %v, want fs.ErrExist", err)
	}
	if _, err := Restore(ctx, t.TempDir(), filepath.Join(t.TempDir(), "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Restore(from an empty directory) = %v, want fs.ErrNotExist", err)
	}
}

// TestBackupOfDamagedStore: a content damaged in the store makes Backup
// fail and name the message, rather than copy the damage silently; a
// backup damaged afterwards makes Restore fail with ErrDamaged naming it.
func TestBackupOfDamagedStore(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	appendMsg(t, s, "1001", um.Inbox, randomContent(t, 30000))
	m := appendMsg(t, s, "1001", um.Inbox, randomContent(t, 30000))
	dir := filepath.Join(t.TempDir(), "backup")
	if _, err := s.Backup(ctx, dir); err != nil {
		t.Fatal(err)
	}
	rel, err := filepath.Rel(s.dir, s.contentPath(t, m))
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, filepath.Join(dir, rel), 5)
	_, err = Restore(ctx, dir, filepath.Join(t.TempDir(), "restored"))
	want := fmt.Sprintf("mailbox 1001 folder INBOX UID %d: content file %s: content checksum wrong", m.UID, filepath.ToSlash(rel))
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), want) {
		t.Errorf("Restore(damaged backup) = %v, want ErrDamaged with %q", err, want)
	}

	if err := os.Truncate(s.contentPath(t, m), 7); err != nil {
		t.Fatal(err)
	}
	dir2 := filepath.Join(t.TempDir(), "backup")
	_, err = s.Backup(ctx, dir2)
	want = fmt.Sprintf("mailbox 1001 folder INBOX UID %d", m.UID)
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), want) {
		t.Errorf("Backup(damaged store) = %v, want ErrDamaged naming %q", err, want)
	}
	if _, err := os.Stat(filepath.Join(dir2, DBFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed backup left %s: %v, want no database", DBFile, err)
	}
}

// TestRestoreNewUIDValidity: a restored store's folders have new, larger
// UIDVALIDITY values and the same messages under the same UIDs, and UIDs
// go on from where the backup's folders left off.
func TestRestoreNewUIDValidity(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	if _, err := s.CreateFolder(ctx, "1001", "Saved"); err != nil {
		t.Fatal(err)
	}
	content := randomContent(t, 30000)
	var msgs []um.Message
	for _, folder := range []string{um.Inbox, um.Inbox, "Saved", um.Trash} {
		msgs = append(msgs, appendMsg(t, s, "1001", folder, content))
	}
	before, err := s.Folders(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "backup")
	if _, err := s.Backup(ctx, dir); err != nil {
		t.Fatal(err)
	}
	restoredDir := filepath.Join(t.TempDir(), "restored")
	if _, err := Restore(ctx, dir, restoredDir); err != nil {
		t.Fatal(err)
	}
	r := openAt(t, restoredDir)
	after, err := r.Folders(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("Folders() after restore = %v, want %d folders", after, len(before))
	}
	for i := range before {
		if after[i].Name != before[i].Name || after[i].UIDNext != before[i].UIDNext || after[i].UIDValidity <= before[i].UIDValidity ||
			after[i].HighestModSeq != before[i].HighestModSeq {
			t.Errorf("folder after restore = %+v, before %+v; want the same name, UIDNEXT and HighestModSeq, a larger UIDVALIDITY", after[i], before[i])
		}
	}
	for _, m := range msgs {
		got, err := r.Get(ctx, "1001", m.ID)
		if err != nil || got.Folder != m.Folder || got.UID != m.UID {
			t.Errorf("Get(%s) after restore = %s UID %d, %v; want %s UID %d", m.ID, got.Folder, got.UID, err, m.Folder, m.UID)
		}
		if !bytes.Equal(readAll(t, r, "1001", m.ID), content) {
			t.Errorf("content of %s differs after restore", m.ID)
		}
	}
	if list, err := r.List(ctx, "1001", um.Inbox); err != nil || len(list) != 2 {
		t.Errorf("List(INBOX) after restore = %d messages, %v; want 2", len(list), err)
	}
	if m := appendMsg(t, r, "1001", um.Inbox, content); m.UID != 3 {
		t.Errorf("next deposit after restore has UID %d, want 3", m.UID)
	}
	if rep := mustCheck(t, r); len(rep.Problems) != 0 {
		t.Errorf("Check() = %v, want no problems", rep.Problems)
	}
}

// TestCheckNamesIndexDamage: a message missing from the mailbox's ID
// index, and an index entry pointing elsewhere, are each named.
func TestCheckNamesIndexDamage(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	a := appendMsg(t, s, "1001", um.Inbox, randomContent(t, 500))
	b := appendMsg(t, s, "1001", um.Inbox, randomContent(t, 500))
	if err := s.db.Update(func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, "1001")
		if err != nil {
			return err
		}
		if err := mb.ids.Delete(a.ID[:]); err != nil {
			return err
		}
		l, _, err := mb.find(b.ID)
		if err != nil {
			return err
		}
		l.uid = 99
		return mb.ids.Put(b.ID[:], l.bytes())
	}); err != nil {
		t.Fatal(err)
	}
	rep := mustCheck(t, s)
	if len(rep.Problems) != 2 {
		t.Fatalf("Check().Problems = %v, want two", rep.Problems)
	}
	for i, want := range []struct {
		uid    um.UID
		detail string
	}{{a.UID, "is not indexed"}, {b.UID, "names UIDVALIDITY"}} {
		p := rep.Problems[i]
		if p.Kind != IndexWrong || p.Mailbox != "1001" || p.Folder != um.Inbox || p.UID != want.uid || !strings.Contains(p.Detail, want.detail) {
			t.Errorf("Problem %d = %+v, want index wrong for INBOX UID %d, saying %q", i, p, want.uid, want.detail)
		}
	}
}

// TestLoggerReceivesWarnings: with Options.Logger set, an error with no
// caller to return to (here a content file that cannot be deleted) is
// logged at Warn.
func TestLoggerReceivesWarnings(t *testing.T) {
	var buf testwait.Buffer // Open's background sweep may log too
	dir := t.TempDir()
	s, err := Open(dir, &Options{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-s.sweepDone // the sweep removes empty folders of audio/
	// A directory where a content file should be makes its removal fail.
	var k blobKey
	k[0] = 0xab
	if err := os.MkdirAll(filepath.Join(s.blobPath(k), "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	s.deleteBlobs([]gone{{k: k}})
	if got := buf.String(); !strings.Contains(got, "level=WARN") || !strings.Contains(got, "delete content file") {
		t.Errorf("log = %q, want a WARN line about the content file", got)
	}
}
