package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

var ctx = context.Background()

// reopen closes s and opens its directory again.
func reopen(t testing.TB, s *Store) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	return openAt(t, s.dir)
}

func appendMsg(t testing.TB, s *Store, mailbox, folder string, content []byte) um.Message {
	t.Helper()
	m, err := s.Append(ctx, mailbox, um.Message{ID: uuid.New(), Folder: folder, CallerNumber: "+4930123456",
		Time: time.Unix(1700000000, 5), Duration: 30 * time.Second, AudioType: "audio/wav",
		Keywords: []string{"$Label1"}, Urgent: true}, bytes.NewReader(content))
	if err != nil {
		t.Fatalf("Append() = %v", err)
	}
	return m
}

func readAll(t testing.TB, s *Store, mailbox string, id uuid.UUID) []byte {
	t.Helper()
	rc, err := s.Open(ctx, mailbox, id)
	if err != nil {
		t.Fatalf("Open(%s) = %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read content of %s: %v", id, err)
	}
	return b
}

func TestSurvivesRestart(t *testing.T) {
	s := openStore(t)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateFolder(ctx, "1001", "Saved"); err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("RIFF"), 1000)
	m1 := appendMsg(t, s, "1001", um.Inbox, content)
	m2 := appendMsg(t, s, "1001", um.Inbox, content[:10])
	if _, err := s.Move(ctx, "1001", []uuid.UUID{m2.ID}, "Saved", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetFlags(ctx, "1001", []uuid.UUID{m1.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}); err != nil {
		t.Fatal(err)
	}
	before, err := s.Folders(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}

	s = reopen(t, s)
	after, err := s.Folders(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("Folders() after restart = %v, want %v", after, before)
	}
	got, err := s.Get(ctx, "1001", m1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Heard() || got.UID != m1.UID || got.Folder != um.Inbox || !got.Time.Equal(m1.Time) || got.CallerNumber != m1.CallerNumber ||
		!got.Urgent || got.Duration != m1.Duration || !um.SameKeywords(got.Keywords, m1.Keywords) || got.Size != int64(len(content)) {
		t.Errorf("Get() after restart = %+v, want %+v heard", got, m1)
	}
	if b := readAll(t, s, "1001", m1.ID); !bytes.Equal(b, content) {
		t.Errorf("content after restart is %d bytes, want %d", len(b), len(content))
	}
	// UIDs continue where they stopped; they are not reused.
	m3 := appendMsg(t, s, "1001", um.Inbox, nil)
	if m3.UID != 3 {
		t.Errorf("UID after restart = %d, want 3", m3.UID)
	}
	// A new folder gets a UIDVALIDITY larger than every earlier one.
	f, err := s.CreateFolder(ctx, "1001", "New")
	if err != nil {
		t.Fatal(err)
	}
	for _, old := range before {
		if f.UIDValidity <= old.UIDValidity {
			t.Errorf("new folder UIDVALIDITY %d <= %d of %s", f.UIDValidity, old.UIDValidity, old.Name)
		}
	}
}

func TestSchemaTooNew(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, putU32(nil, SchemaVersion+1))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(dir, nil)
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open() of a newer schema = %v, want ErrSchemaTooNew", err)
	}
}

func TestMigratesFromEmpty(t *testing.T) {
	// A bbolt file without a schema key is version 0: Open migrates it.
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := openAt(t, dir)
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		v, err := schemaVersion(tx)
		if v != SchemaVersion {
			t.Errorf("schema version after Open = %d, want %d", v, SchemaVersion)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Errorf("CreateMailbox() after migration = %v", err)
	}
}

func TestCorruptFile(t *testing.T) {
	var used int64 // the bytes of um.db its last commit needs
	populated := func(t *testing.T) string {
		dir := t.TempDir()
		s, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.CreateMailbox(ctx, "1001"); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200; i++ {
			if err := s.CreateMailbox(ctx, fmt.Sprintf("mb%04d-%s", i, bytes.Repeat([]byte("x"), 200))); err != nil {
				t.Fatal(err)
			}
		}
		s.db.View(func(tx *bolt.Tx) error {
			used = tx.Size()
			return nil
		})
		s.Close()
		return dir
	}
	tests := []struct {
		name   string
		break_ func(t *testing.T, path string)
	}{
		{"garbage", func(t *testing.T, path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte("not a database "), 4096), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"short garbage", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("hello"), 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated to header", func(t *testing.T, path string) {
			if err := os.Truncate(path, 3*4096); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated by half", func(t *testing.T, path string) {
			// Half of what the pages need: the file itself is longer,
			// bbolt grows it ahead in steps.
			if err := os.Truncate(path, used/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"meta pages overwritten", func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 2*4096), 0); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := populated(t)
			tt.break_(t, filepath.Join(dir, DBFile))
			s, err := Open(dir, nil)
			if err == nil {
				s.Close()
				t.Fatalf("Open() of a damaged file = nil error")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open() = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestLockedByAnother(t *testing.T) {
	s := openStore(t)
	_, err := Open(s.dir, &Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open() = %v, want ErrLocked", err)
	}
}

func TestOrphanSweep(t *testing.T) {
	s := openStore(t)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	m := appendMsg(t, s, "1001", um.Inbox, []byte("kept"))
	// A content file whose commit never happened, as a crash leaves it.
	var k blobKey
	k[0], k[15] = 0xab, 1
	orphan := s.blobPath(k)
	if err := os.MkdirAll(filepath.Dir(orphan), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(orphan, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	<-s.sweepDone
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan after sweep: Stat() = %v, want not exist", err)
	}
	if b := readAll(t, s, "1001", m.ID); string(b) != "kept" {
		t.Errorf("content after sweep = %q, want %q", b, "kept")
	}
}

func TestRemoveDeletesContent(t *testing.T) {
	s := openStore(t)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	audio := bytes.Repeat([]byte("audio"), inlineMax/5+1) // too big for the database: a file
	m := appendMsg(t, s, "1001", um.Inbox, audio)
	copies, err := s.Copy(ctx, "1001", []uuid.UUID{m.ID}, um.Trash, []uuid.UUID{uuid.New()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	files := func() int { return countFiles(t, s) }
	if n := files(); n != 1 {
		t.Fatalf("content files after Copy = %d, want 1 (shared)", n)
	}
	if err := s.Remove(ctx, "1001", []uuid.UUID{m.ID}); err != nil {
		t.Fatal(err)
	}
	if b := readAll(t, s, "1001", copies[0].ID); !bytes.Equal(b, audio) {
		t.Errorf("copy content after removing the original is %d bytes, want %d", len(b), len(audio))
	}
	if err := s.Remove(ctx, "1001", []uuid.UUID{copies[0].ID}); err != nil {
		t.Fatal(err)
	}
	if n := files(); n != 0 {
		t.Errorf("content files after removing both = %d, want 0", n)
	}
}

func TestClosed(t *testing.T) {
	s := openStore(t)
	s.Close()
	if err := s.CreateMailbox(ctx, "1001"); !errors.Is(err, um.ErrClosed) {
		t.Errorf("CreateMailbox() after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Mailboxes(ctx); !errors.Is(err, um.ErrClosed) {
		t.Errorf("Mailboxes() after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, bytes.NewReader(nil)); !errors.Is(err, um.ErrClosed) {
		t.Errorf("Append() after Close = %v, want ErrClosed", err)
	}
}
