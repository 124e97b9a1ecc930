package boltstore

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// inlineCount returns how many contents the database holds itself.
func inlineCount(t testing.TB, s *Store) int {
	t.Helper()
	n := 0
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketContents).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

// TestInlineContent checks where contents of the sizes around inlineMax go,
// that both kinds read back whole, before and after a restart, and that
// Copy, Remove and DeleteFolder count and delete both kinds.
func TestInlineContent(t *testing.T) {
	s := openStore(t)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateFolder(ctx, "1001", "Saved"); err != nil {
		t.Fatal(err)
	}
	sizes := []int{0, 1, 2048, inlineMax - 1, inlineMax, inlineMax + 1, 3*inlineMax + 7, 300 << 10}
	want := map[uuid.UUID][]byte{}
	var ids []uuid.UUID
	files, inline := 0, 0
	for _, n := range sizes {
		content := randomBytes(n)
		m := appendMsg(t, s, "1001", um.Inbox, content)
		if m.Size != int64(n) {
			t.Errorf("Append() of %d bytes: Size = %d", n, m.Size)
		}
		want[m.ID] = content
		ids = append(ids, m.ID)
		if n > inlineMax {
			files++
		} else {
			inline++
		}
	}
	check := func(when string) {
		t.Helper()
		for id, content := range want {
			if b := readAll(t, s, "1001", id); !bytes.Equal(b, content) {
				t.Errorf("%s: content of %s is %d bytes and differs, want %d", when, id, len(b), len(content))
			}
		}
		if n := countFiles(t, s); n != files {
			t.Errorf("%s: content files = %d, want %d", when, n, files)
		}
		if n := inlineCount(t, s); n != inline {
			t.Errorf("%s: contents in the database = %d, want %d", when, n, inline)
		}
	}
	check("after Append")

	// A small content seeks like a file: rendering serves slices of it.
	rc, err := s.Open(ctx, "1001", ids[2])
	if err != nil {
		t.Fatal(err)
	}
	sk, ok := rc.(io.ReadSeeker)
	if !ok {
		t.Fatalf("Open() of a small content = %T, want an io.Seeker", rc)
	}
	if _, err := sk.Seek(1000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(sk); !bytes.Equal(b, want[ids[2]][1000:]) {
		t.Errorf("content after Seek(1000) is %d bytes and differs, want %d", len(b), len(want[ids[2]])-1000)
	}
	rc.Close()

	s = reopen(t, s)
	check("after restart")

	// Copies share either kind; the content goes with the last reference.
	copies, err := s.Copy(ctx, "1001", ids, "Saved", newIDs(len(ids)), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range copies {
		want[c.ID] = want[ids[i]]
	}
	check("after Copy")
	if err := s.Remove(ctx, "1001", ids); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		delete(want, id)
	}
	check("after removing the originals")
	if _, err := s.Open(ctx, "1001", ids[0]); err == nil {
		t.Error("Open() of a removed message succeeded")
	}
	if err := s.DeleteFolder(ctx, "1001", "Saved"); err != nil {
		t.Fatal(err)
	}
	want = map[uuid.UUID][]byte{}
	files, inline = 0, 0
	check("after DeleteFolder")
}

func newIDs(n int) []uuid.UUID {
	ids := make([]uuid.UUID, n)
	for i := range ids {
		ids[i] = uuid.New()
	}
	return ids
}

// TestMigratesFromV1 opens a database of schema 1, which kept every
// content in a file, and checks that its messages read back, large and
// small ones (a schema 1 record of at most inlineMax bytes names a file,
// with the inline bit clear), that Remove deletes such a small message's
// file, and that new small contents go into the database.
func TestMigratesFromV1(t *testing.T) {
	s := openStore(t)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	big := randomBytes(inlineMax + 100)
	m1 := appendMsg(t, s, "1001", um.Inbox, big)
	small := randomBytes(inlineMax)
	m0 := appendMsg(t, s, "1001", um.Inbox, small)
	dir := s.dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	var smallPath string
	if err := db.Update(func(tx *bolt.Tx) error {
		// Turn the small message into what schema 1 wrote: its content
		// in a file of its own, its record without the inline bit.
		mb, err := getMailbox(tx, "1001")
		if err != nil {
			return err
		}
		l, r, err := mb.find(m0.ID)
		if err != nil {
			return err
		}
		if !r.inline {
			return fmt.Errorf("content of %d bytes was not kept in the database", len(small))
		}
		smallPath = filepath.Join(dir, audioDir, hex.EncodeToString(r.blob[:1]), hex.EncodeToString(r.blob[:]))
		if err := os.MkdirAll(filepath.Dir(smallPath), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(smallPath, tx.Bucket(bucketContents).Get(r.blob[:]), 0o600); err != nil {
			return err
		}
		r.inline = false
		b, err := mb.msgBucket(l.validity)
		if err != nil {
			return err
		}
		if err := b.Put(uidKey(l.uid), encodeRecord(r)); err != nil {
			return err
		}
		if err := tx.DeleteBucket(bucketContents); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, putU32(nil, 1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s = openAt(t, dir)
	if b := readAll(t, s, "1001", m1.ID); !bytes.Equal(b, big) {
		t.Errorf("content of a schema 1 message after migration is %d bytes and differs", len(b))
	}
	if b := readAll(t, s, "1001", m0.ID); !bytes.Equal(b, small) {
		t.Errorf("content of a small schema 1 message in a file after migration is %d bytes and differs, want %d", len(b), len(small))
	}
	if _, inline := contentKey(t, s, "1001", m0.ID); inline {
		t.Error("small schema 1 message is marked as kept in the database after migration")
	}
	if err := s.Remove(ctx, "1001", []uuid.UUID{m0.ID}); err != nil {
		t.Fatalf("Remove(small schema 1 message) = %v", err)
	}
	if _, err := os.Stat(smallPath); !os.IsNotExist(err) {
		t.Errorf("content file of a removed small schema 1 message: Stat = %v, want it deleted", err)
	}
	if _, err := s.Open(ctx, "1001", m0.ID); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Open(removed message) = %v, want um.ErrNotFound", err)
	}
	m2 := appendMsg(t, s, "1001", um.Inbox, []byte("Subject: hi\r\n\r\nhello\r\n"))
	if b := readAll(t, s, "1001", m2.ID); string(b) != "Subject: hi\r\n\r\nhello\r\n" {
		t.Errorf("small content after migration = %q", b)
	}
	if n := inlineCount(t, s); n != 1 {
		t.Errorf("contents in the database after migration and one small Append = %d, want 1", n)
	}
}

// allFiles counts every file under audio/, pooled or not.
func allFiles(t testing.TB, s *Store) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(s.audio, func(path string, d os.DirEntry, err error) error {
		if d != nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
