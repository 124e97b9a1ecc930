package boltstore

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// mount runs mount(8) with args; the tests that use it need root, which the
// project's test machines are.
func mount(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command("mount", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("mount %v: %v: %s (these tests need root and mount(8))", args, err, out)
	}
}

func umount(t testing.TB, dir string) {
	t.Helper()
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

func TestReadOnlyDirectory(t *testing.T) {
	// An existing store on a read-only mount, and an empty read-only
	// directory: Open fails and says why, rather than failing the first
	// deposit.
	src := t.TempDir()
	s, err := Open(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	empty := t.TempDir()
	for _, tt := range []struct{ name, src string }{{"existing store", src}, {"empty directory", empty}} {
		t.Run(tt.name, func(t *testing.T) {
			ro := t.TempDir()
			mount(t, "--bind", tt.src, ro)
			umount(t, ro)
			mount(t, "-o", "remount,ro,bind", ro)
			s, err := Open(ro, nil)
			if err == nil {
				s.Close()
				t.Fatal("Open() on a read-only directory = nil error")
			}
			if !errors.Is(err, syscall.EROFS) {
				t.Errorf("Open() = %v, want an error wrapping EROFS", err)
			}
		})
	}
}

func TestFullDisk(t *testing.T) {
	// A 3 MB tmpfs holds a few 480 KB deposits; the one that does not fit
	// fails, and every one acknowledged before stays whole, also after a
	// restart. Freeing space makes deposits work again.
	dir := t.TempDir()
	mount(t, "-t", "tmpfs", "-o", "size=3m", "tmpfs", dir)
	umount(t, dir)
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	acked := map[uuid.UUID][]byte{}
	var failed error
	for i := 0; i < 20 && failed == nil; i++ {
		audio := make([]byte, 480000)
		rand.Read(audio)
		m, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, bytes.NewReader(audio))
		if err != nil {
			failed = err
			break
		}
		acked[m.ID] = audio
	}
	if failed == nil {
		t.Fatal("20 deposits of 480 KB into 3 MB all succeeded")
	}
	if !errors.Is(failed, syscall.ENOSPC) {
		t.Errorf("Append() on a full disk = %v, want an error wrapping ENOSPC", failed)
	}
	if len(acked) == 0 {
		t.Fatal("no deposit fitted")
	}
	// Fill the rest with ever smaller deposits, until even the database
	// cannot grow: failed commits must not lose what was acknowledged.
	var errs []error
	for _, size := range []int{100000, 20000, 4000, 500, 0} {
		for i := 0; i < 200; i++ {
			audio := make([]byte, size)
			rand.Read(audio)
			m, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox, CallerName: string(make([]byte, 2000))}, bytes.NewReader(audio))
			if err != nil {
				errs = append(errs, err)
				break
			}
			acked[m.ID] = audio
		}
	}
	t.Logf("%d deposits acknowledged; errors: %v", len(acked), errs)
	check := func(s *Store) {
		t.Helper()
		msgs, err := s.List(ctx, "1001", um.Inbox)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != len(acked) {
			t.Errorf("List() = %d messages, want the %d acknowledged", len(msgs), len(acked))
		}
		for id, audio := range acked {
			if b := readAll(t, s, "1001", id); !bytes.Equal(b, audio) {
				t.Errorf("message %s: content is %d bytes and differs, want %d", id, len(b), len(audio))
			}
		}
	}
	check(s)
	// Contents of up to inlineMax bytes are in the database, not files.
	wantFiles := 0
	for _, audio := range acked {
		if len(audio) > inlineMax {
			wantFiles++
		}
	}
	if n := countFiles(t, s); n != wantFiles {
		t.Errorf("content files after the failed deposit = %d, want %d", n, wantFiles)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, nil); err != nil {
		t.Fatalf("Open() after the disk filled = %v", err)
	}
	check(s)
	// Free the space of two 30-second messages.
	freed := 0
	for id, audio := range acked {
		if len(audio) < 480000 || freed == 2 {
			continue
		}
		if err := s.Remove(ctx, "1001", []uuid.UUID{id}); err != nil {
			t.Fatalf("Remove() on a full disk = %v", err)
		}
		delete(acked, id)
		freed++
	}
	m := appendMsg(t, s, "1001", um.Inbox, make([]byte, 480000))
	acked[m.ID] = make([]byte, 480000)
	check(s)
}

// countFiles counts the contents of s kept outside the database's contents
// bucket: content files (leaving out those of writes in progress) and
// contents in log segments. Call it when no Append is running.
func countFiles(t testing.TB, s *Store) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(s.audio, func(path string, d os.DirEntry, err error) error {
		if d == nil || d.IsDir() {
			return err
		}
		var k blobKey
		if _, err := hex.Decode(k[:], []byte(d.Name())); err != nil {
			t.Errorf("unexpected file %s", path)
		}
		if !s.blobs.has(k) {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		n += tx.Bucket(bucketSeg).Stats().KeyN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// countSegments counts the files in the log directory of s.
func countSegments(t testing.TB, s *Store) int {
	t.Helper()
	seqs, err := segments(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(seqs)
}
