package boltstore

import (
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// syncEvent is one sync the store made, or one of its commits.
type syncEvent struct {
	kind  string    // "fdatasync", "syncdir" or "commit"
	path  string    // the file synced, or the directory
	names []string  // syncdir: the entries of the directory just before the sync
	blobs []blobKey // commit: the contents the committed state references
}

// syncRecorder keeps the syncs and commits of the store in their order.
type syncRecorder struct {
	mu     sync.Mutex
	events []syncEvent
}

func (r *syncRecorder) add(e syncEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *syncRecorder) snapshot() []syncEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// recordSyncs wraps the store's fdatasync and directory fsync and hooks its
// commits. Call it before Open, so the goroutines Open starts see the hooks,
// and do not run the test in parallel: the hooks are package variables. They
// are restored after the stores opened later in the test are closed.
func recordSyncs(t *testing.T) *syncRecorder {
	t.Helper()
	rec := &syncRecorder{}
	origData, origDir, origCommit := fdatasync, syncDir, beforeCommit
	t.Cleanup(func() { fdatasync, syncDir, beforeCommit = origData, origDir, origCommit })
	fdatasync = func(f *os.File) error {
		err := origData(f)
		if err == nil {
			rec.add(syncEvent{kind: "fdatasync", path: f.Name()})
		}
		return err
	}
	syncDir = func(dir string) error {
		// Read before the sync: an entry seen then existed when the
		// directory was synced, so the sync made it durable.
		ents, rerr := os.ReadDir(dir)
		err := origDir(dir)
		if err == nil && rerr == nil {
			names := make([]string, len(ents))
			for i, e := range ents {
				names[i] = e.Name()
			}
			rec.add(syncEvent{kind: "syncdir", path: dir, names: names})
		}
		return err
	}
	beforeCommit = func(tx *bolt.Tx) {
		var blobs []blobKey
		tx.Bucket(bucketBlobs).ForEach(func(k, _ []byte) error {
			var b blobKey
			copy(b[:], k)
			blobs = append(blobs, b)
			return nil
		})
		rec.add(syncEvent{kind: "commit", blobs: blobs})
	}
	return rec
}

// contentKey returns the key of message id's content and whether it is
// kept in the database.
func contentKey(t testing.TB, s *Store, mailbox string, id uuid.UUID) (blobKey, bool) {
	t.Helper()
	var r *record
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		_, r, err = mb.find(id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return r.blob, r.inline
}

// TestDepositSyncOrder checks the order of syncs that makes a deposit of a
// content file survive power loss, which killing the process (the page
// cache survives) cannot show: the content file is fdatasynced, its name is
// made durable by an fsync of its directory, and the directory's own name
// by an fsync of audio/, all before the transaction that records the
// message commits and before Append returns. It checks both the file taken
// from the pool, whose directory was synced when the pool was filled, and
// the file a deposit makes itself when the pool is empty.
func TestDepositSyncOrder(t *testing.T) {
	for _, tc := range []struct {
		name      string
		emptyPool bool
	}{
		{"pool", false},
		{"empty pool", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := recordSyncs(t)
			s := openStore(t)
			if err := s.CreateMailbox(ctx, "1001"); err != nil {
				t.Fatal(err)
			}
			s.pool.waitIdle()
			if tc.emptyPool {
				s.pool.close(s) // no pool, no refill
			} else if poolFiles(s) == 0 {
				t.Fatal("pool is empty after Open")
			}
			start := len(rec.snapshot())
			content := randomBytes(inlineMax + 4096)
			m := appendMsg(t, s, "1001", um.Inbox, content)
			events := rec.snapshot() // what happened before Append returned

			k, inline := contentKey(t, s, "1001", m.ID)
			if inline {
				t.Fatalf("content of %d bytes is kept in the database, want a file", len(content))
			}
			path := s.blobPath(k)
			dir := filepath.Dir(path)

			commit := slices.IndexFunc(events, func(e syncEvent) bool {
				return e.kind == "commit" && slices.Contains(e.blobs, k)
			})
			if commit < 0 {
				t.Fatalf("no commit referencing content %x was recorded before Append returned: %+v", k, events)
			}
			if commit < start {
				t.Fatalf("content %x was referenced by a commit before Append started", k)
			}
			data := slices.IndexFunc(events, func(e syncEvent) bool {
				return e.kind == "fdatasync" && e.path == path
			})
			if data < 0 || data > commit {
				t.Errorf("fdatasync of the content file at event %d, commit of its record at %d: want the sync first", data, commit)
			}
			if data >= 0 && data < start {
				t.Errorf("content file was fdatasynced at event %d, before Append started at %d", data, start)
			}
			name := slices.IndexFunc(events, func(e syncEvent) bool {
				return e.kind == "syncdir" && e.path == dir && slices.Contains(e.names, filepath.Base(path))
			})
			if name < 0 || name > commit {
				t.Errorf("fsync of %s holding the content file at event %d, commit of its record at %d: want the sync first", dir, name, commit)
			}
			// The pool's files had their directory synced when the pool was
			// filled; a deposit that found the pool empty syncs its own.
			if tc.emptyPool && name >= 0 && name < start {
				t.Errorf("directory of a file made with no pool was synced at event %d, before Append started at %d", name, start)
			}
			if !tc.emptyPool && name >= start {
				t.Errorf("directory of a pool file was synced at event %d, during Append (started at %d): the pool was not used", name, start)
			}
			sub := slices.IndexFunc(events, func(e syncEvent) bool {
				return e.kind == "syncdir" && e.path == s.audio && slices.Contains(e.names, filepath.Base(dir))
			})
			if sub < 0 || sub > commit {
				t.Errorf("fsync of audio/ holding %s at event %d, commit of the record at %d: want the sync first", filepath.Base(dir), sub, commit)
			}
		})
	}
}
