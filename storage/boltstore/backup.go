package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/embeddedum/um"
	bolt "go.etcd.io/bbolt"
)

// BackupInfo says what Backup copied.
type BackupInfo struct {
	Messages int   // message records in the backup
	Files    int   // content files copied beside the database
	Bytes    int64 // bytes written, the database included
}

// backupSnapshotted, when a test sets it, runs after Backup has copied the
// database and before it copies the content files.
var backupSnapshotted func()

// copyWorkers is how many content files Backup copies at once.
const copyWorkers = 4

// partialSuffix marks a database file still being written. Backup and
// Restore write um.db last, under this name, and rename it when every
// content file is durable, so a directory holding um.db holds a whole
// store, and one interrupted by a crash or an error holds none.
const partialSuffix = ".partial"

// Backup writes a copy of the store into dir, which must not exist or be
// empty, while the store keeps serving. The copy is a store directory like
// the original (Open it, or hand it to Restore) and is consistent: the
// database as of one instant, through a read transaction, and every
// content file that database names. Every deposit acknowledged before
// Backup was called is in it; deposits and removals that run meanwhile are
// in it or not, whole either way.
//
// The order is what makes it consistent. A content file is written and
// synced before the commit that names it, so every file the snapshot names
// exists when the snapshot is taken. A removal deletes its file after its
// commit, so one that commits after the snapshot could delete a file the
// snapshot names before Backup has copied it: Backup therefore holds
// deletions back from before the snapshot until it is done, and the files
// go afterwards. The read transaction lasts only while the database is
// copied, since a write that has to grow the database file waits for it;
// the content files are copied after it.
//
// Each content file is verified against its recorded size and checksum
// while it is copied; a damaged or missing one makes Backup fail, naming
// the message (run Check for the full list). Everything is fsynced, and
// um.db is written last under a temporary name and renamed, so a directory
// with an um.db holds a whole backup. On error, dir holds no um.db and can
// be removed.
func (s *Store) Backup(ctx context.Context, dir string) (BackupInfo, error) {
	var info BackupInfo
	if err := emptyDir(dir); err != nil {
		return info, fmt.Errorf("boltstore: backup: %w", err)
	}
	files := make(map[blobKey]*fileCheck)
	var order []blobKey
	var bad []Problem
	s.pins.hold()
	defer s.unpin()
	partial := filepath.Join(dir, DBFile+partialSuffix)
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if err := walk(tx, func(m *stored) error {
			info.Messages++
			if m.rec.inline {
				return nil
			}
			k := m.rec.blob
			if fc := files[k]; fc != nil {
				fc.msgs = append(fc.msgs, m)
				return nil
			}
			sum, hasSum, err := getSum(tx, k)
			if err != nil {
				return err
			}
			fc := &fileCheck{size: m.rec.m.Size, sum: sum, hasSum: hasSum, msgs: []*stored{m}}
			if l, ok, err := segLocOf(tx, k); err != nil {
				return err
			} else if ok {
				fc.seg = &l
			}
			files[k] = fc
			order = append(order, k)
			return nil
		}, func(p Problem) { bad = append(bad, p) }); err != nil {
			return err
		}
		n, err := writeDurably(partial, func(w io.Writer) (int64, error) { return tx.WriteTo(w) })
		info.Bytes += n
		return err
	})
	if err != nil {
		return BackupInfo{}, fmt.Errorf("boltstore: backup: %w", err)
	}
	if len(bad) > 0 {
		os.Remove(partial)
		return BackupInfo{}, fmt.Errorf("boltstore: backup: %w: %s", ErrDamaged, bad[0])
	}
	if backupSnapshotted != nil {
		backupSnapshotted()
	}
	dirs := make(map[string]bool)
	dsts := make([]string, len(order))
	for i, k := range order {
		dsts[i] = filepath.Join(dir, audioDir, hex.EncodeToString(k[:1]), hex.EncodeToString(k[:]))
		if d := filepath.Dir(dsts[i]); !dirs[d] {
			if err := os.Mkdir(d, 0o700); err != nil {
				return BackupInfo{}, fmt.Errorf("boltstore: backup: %w", err)
			}
			dirs[d] = true
		}
	}
	// A few copies at once keep the disk busy while each waits for its
	// fdatasync.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		next     int
		wg       sync.WaitGroup
	)
	for range copyWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if i >= len(order) || cctx.Err() != nil {
					return
				}
				fc := files[order[i]]
				k := order[i]
				n, err := copyContent(cctx, s.relPath(fc.msgs[0], fc), func() (io.ReadCloser, error) { return s.openContent(k, fc) }, dsts[i], fc)
				mu.Lock()
				if err != nil && firstErr == nil {
					m := fc.msgs[0]
					firstErr = fmt.Errorf("boltstore: backup: mailbox %s folder %s UID %d: %w", m.mailbox, m.folder, m.uid, err)
					cancel()
				}
				if err == nil {
					info.Files++
					info.Bytes += n
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return BackupInfo{}, firstErr
	}
	if err := ctx.Err(); err != nil {
		return BackupInfo{}, fmt.Errorf("boltstore: backup: %w", err)
	}
	if err := dropSegLocs(partial); err != nil {
		return BackupInfo{}, fmt.Errorf("boltstore: backup: %w", err)
	}
	if err := finish(dir, dirs); err != nil {
		return BackupInfo{}, fmt.Errorf("boltstore: backup: %w", err)
	}
	return info, nil
}

// Restore makes dir, which must not exist or be empty, a store holding the
// backup in from (a directory Backup wrote), then opens it and runs Check.
// It never writes over a store: restoring in place means moving the
// damaged directory aside first. Like Backup it writes um.db last, so an
// interrupted Restore leaves no store that Open would take for whole.
//
// Every folder of the restored store gets a new, larger UIDVALIDITY; its
// messages keep their UIDs. A backup is older than what mail clients and
// forwarding have seen: the UIDs handed out after it was taken would be
// handed out again, to other messages, and a client would show the
// voicemail it cached under the old UID. With the new UIDVALIDITY, clients
// drop their caches and fetch the folder again (RFC 9051, section 2.3.1.1),
// the sync engine re-associates messages by their ID header, and
// forwarding starts from INBOX's current end.
//
// The report is the restored store's; when it lists problems (a backup
// damaged since it was written), the error wraps ErrDamaged and names
// them, and dir is left for inspection.
func Restore(ctx context.Context, from, dir string) (*CheckReport, error) {
	if _, err := os.Stat(filepath.Join(from, DBFile)); err != nil {
		return nil, fmt.Errorf("boltstore: restore: %s is not a backup: %w", from, err)
	}
	if err := emptyDir(dir); err != nil {
		return nil, fmt.Errorf("boltstore: restore: %w", err)
	}
	dirs := make(map[string]bool)
	subs, err := os.ReadDir(filepath.Join(from, audioDir))
	if err != nil && !isNotExist(err) {
		return nil, fmt.Errorf("boltstore: restore: %w", err)
	}
	for _, sub := range subs {
		if !sub.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(from, audioDir, sub.Name()))
		if err != nil {
			return nil, fmt.Errorf("boltstore: restore: %w", err)
		}
		dst := filepath.Join(dir, audioDir, sub.Name())
		if err := os.MkdirAll(dst, 0o700); err != nil {
			return nil, fmt.Errorf("boltstore: restore: %w", err)
		}
		dirs[dst] = true
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("boltstore: restore: %w", err)
			}
			src := filepath.Join(from, audioDir, sub.Name(), e.Name())
			if _, err := copyContent(ctx, src, func() (io.ReadCloser, error) { return os.Open(src) }, filepath.Join(dst, e.Name()), nil); err != nil {
				return nil, fmt.Errorf("boltstore: restore: %w", err)
			}
		}
	}
	src, err := os.Open(filepath.Join(from, DBFile))
	if err != nil {
		return nil, fmt.Errorf("boltstore: restore: %w", err)
	}
	_, err = writeDurably(filepath.Join(dir, DBFile+partialSuffix), func(w io.Writer) (int64, error) {
		return io.Copy(w, ctxReader{ctx, src})
	})
	src.Close()
	if err != nil {
		return nil, fmt.Errorf("boltstore: restore: %w", err)
	}
	if err := finish(dir, dirs); err != nil {
		return nil, fmt.Errorf("boltstore: restore: %w", err)
	}
	s, err := Open(dir, nil)
	if err != nil {
		return nil, fmt.Errorf("boltstore: restore: %w", err)
	}
	defer s.Close()
	if err := s.update(ctx, newValidities); err != nil {
		return nil, fmt.Errorf("boltstore: restore: new UIDVALIDITY: %w", err)
	}
	rep, err := s.Check(ctx)
	if err != nil {
		return nil, fmt.Errorf("boltstore: restore: %w", err)
	}
	if err := rep.Err(); err != nil {
		return rep, fmt.Errorf("boltstore: restore: %w", err)
	}
	return rep, nil
}

// emptyDir makes dir, or checks that it is empty.
func emptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s is not empty: %w", dir, fs.ErrExist)
	}
	return os.Mkdir(filepath.Join(dir, audioDir), 0o700)
}

// writeDurably creates path, fills it with write, and fdatasyncs it.
func writeDurably(path string, write func(io.Writer) (int64, error)) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := write(f)
	if err == nil {
		err = fdatasync(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return n, err
}

// copyContent copies content file src to dst, durably, checking it
// against fc's size and checksum when fc is not nil.
func copyContent(ctx context.Context, src string, open func() (io.ReadCloser, error), dst string, fc *fileCheck) (int64, error) {
	in, err := open()
	if err != nil {
		if isNotExist(err) && fc != nil {
			return 0, fmt.Errorf("content file %s: %s", src, ContentMissing)
		}
		return 0, err
	}
	defer in.Close()
	h := crc32.New(castagnoli)
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	n, err := writeDurably(dst, func(w io.Writer) (int64, error) {
		return io.CopyBuffer(io.MultiWriter(w, h), ctxReader{ctx, in}, *bufp)
	})
	if err != nil {
		return n, err
	}
	if fc != nil {
		if kind, detail := judge(true, n, fc.size, h.Sum32(), fc.sum, fc.hasSum); kind != 0 {
			os.Remove(dst)
			return n, fmt.Errorf("%w: content file %s: %s: %s", ErrDamaged, src, kind, detail)
		}
	}
	return n, nil
}

// finish makes the copied content files' directory entries durable, then
// puts um.db in place and makes that durable too.
func finish(dir string, dirs map[string]bool) error {
	var errs []error
	for d := range dirs {
		errs = append(errs, syncDir(d))
	}
	errs = append(errs, syncDir(filepath.Join(dir, audioDir)))
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Rename(filepath.Join(dir, DBFile+partialSuffix), filepath.Join(dir, DBFile)); err != nil {
		return err
	}
	return syncDir(dir)
}

// newValidities gives every folder of every mailbox a new UIDVALIDITY from
// the store's counter, moving its messages, with their UIDs, under it.
func newValidities(tx *bolt.Tx) error {
	// The lost store may have handed out values past the backup's counter;
	// the clock is past them (the counter started from it and grows by
	// one per folder created), so the new values start from the clock.
	meta := tx.Bucket(bucketMeta)
	if v := meta.Get(keyValidity); len(v) == 4 && binary.BigEndian.Uint32(v) < uint32(time.Now().Unix()) {
		if err := meta.Put(keyValidity, putU32(nil, uint32(time.Now().Unix()))); err != nil {
			return err
		}
	}
	var names []string
	if err := tx.Bucket(bucketMailboxes).ForEachBucket(func(k []byte) error {
		names = append(names, string(k))
		return nil
	}); err != nil {
		return err
	}
	for _, name := range names {
		mb, err := getMailbox(tx, name)
		if err != nil {
			return err
		}
		type folder struct {
			name []byte
			fm   folderMeta
		}
		var folders []folder
		if err := mb.folders.ForEach(func(k, v []byte) error {
			fm, err := parseFolder(v)
			folders = append(folders, folder{bytes.Clone(k), fm})
			return err
		}); err != nil {
			return err
		}
		for _, f := range folders {
			old, err := mb.msgBucket(f.fm.validity)
			if err != nil {
				return err
			}
			v, err := nextValidity(tx)
			if err != nil {
				return err
			}
			moved, err := mb.msgs.CreateBucket(putU32(nil, v))
			if err != nil {
				return err
			}
			var r record
			if err := old.ForEach(func(k, val []byte) error {
				if err := decodeRecord(val, &r); err != nil || len(k) != 4 {
					return fmt.Errorf("%w: mailbox %q folder %q: message record", ErrCorrupt, name, f.name)
				}
				if err := moved.Put(bytes.Clone(k), bytes.Clone(val)); err != nil {
					return err
				}
				return mb.ids.Put(bytes.Clone(r.m.ID[:]), loc{v, um.UID(binary.BigEndian.Uint32(k))}.bytes())
			}); err != nil {
				return err
			}
			if err := mb.msgs.DeleteBucket(putU32(nil, f.fm.validity)); err != nil {
				return err
			}
			fm := f.fm // keeps whatever else the folder's value holds
			fm.validity = v
			if err := mb.folders.Put(f.name, fm.bytes()); err != nil {
				return err
			}
			// HighestModSeq carries over; the removals recorded under the
			// old UIDVALIDITY mean nothing under the new one, where clients
			// fetch everything again.
			if err := mb.renumberModSeqs(f.fm.validity, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// dropSegLocs empties the segment bucket of the database copy at path: in
// a backup every content is a file of its own, and there is no log.
func dropSegLocs(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketSeg); b == nil || b.Stats().KeyN == 0 {
			return nil
		}
		if err := tx.DeleteBucket(bucketSeg); err != nil {
			return err
		}
		_, err := tx.CreateBucket(bucketSeg)
		return err
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	return err
}
