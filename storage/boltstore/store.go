package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/embeddedum/um"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

var _ um.Store = (*Store)(nil)

// Errors Open returns, wrapped with the path and cause; test them with
// errors.Is.
var (
	// ErrSchemaTooNew: um.db was written by a newer version of this package
	// whose schema this one does not know. Nothing was changed; run the newer
	// version, or restore a backup.
	ErrSchemaTooNew = errors.New("boltstore: database schema is newer than this program")
	// ErrCorrupt: um.db is not a bbolt database, is damaged, or was cut
	// short (a truncated copy, a full disk at copy time). Restore a backup.
	ErrCorrupt = errors.New("boltstore: database file is corrupt")
	// ErrLocked: another process has the directory open.
	ErrLocked = errors.New("boltstore: database is in use by another process")
)

// DBFile is the name of the database file in the store's directory.
const DBFile = "um.db"

// audioDir is the directory, under the store's, that holds content files.
const audioDir = "audio"

// Options tune a Store. The zero value works.
type Options struct {
	// LockTimeout bounds how long Open waits for another process to close
	// the store; past it Open fails with ErrLocked. Default one second.
	LockTimeout time.Duration
	// Logger receives, at Warn, the errors that have no caller to return
	// to, such as a failure to delete an orphaned content file (a server
	// fault: the disk). It supersedes Logf. Nil: Logf, or nothing when
	// both are nil.
	Logger *slog.Logger
	// Logf receives the same errors as text when Logger is nil; kept for
	// hosts written before Logger. Default: dropped.
	Logf func(format string, args ...any)
}

// Store is the embedded um.Store: one directory, one bbolt file and the
// content files beside it. It is safe for concurrent use by the goroutines
// of one process; Open locks the directory against other processes.
type Store struct {
	dir   string
	audio string
	db    *bolt.DB
	logf  func(string, ...any)
	dbf   *os.File // um.db, read by the committer for meta pages
	c     *committer
	blobs blobSet    // content files being written, which the sweep must leave alone
	pins  deletePins // content files a backup or check still reads

	firstSeq uint64 // the first log segment this process creates; older unreferenced ones are swept

	leases leases // in memory: see lease.go

	// closeMu is held shared by every operation that touches db and
	// exclusively by Close, so db is never used after it is closed.
	closeMu sync.RWMutex
	closed  bool

	sweepCancel context.CancelFunc
	sweepDone   chan struct{} // closed when the orphan sweep returns
}

// Open opens the store in dir, creating dir and an empty store when they do
// not exist, and migrating an older schema. It fails with ErrSchemaTooNew,
// ErrCorrupt or ErrLocked as they document, and with the file system's error
// (wrapped) when dir cannot be written, for example on a read-only mount.
//
// Open takes the same time whatever the store holds: it reads no mailbox.
// Content files left by a crash between writing them and committing their
// message are deleted in the background afterwards.
func Open(dir string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = time.Second
	}
	if o.Logger != nil {
		l := o.Logger
		o.Logf = func(format string, args ...any) { l.Warn(fmt.Sprintf(format, args...)) }
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(filepath.Join(dir, audioDir), 0o700); err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", dir, err)
	}
	// A directory that cannot be written would otherwise only show at the
	// first deposit, after the PBX has told a caller the message was kept.
	if err := probeWritable(dir); err != nil {
		return nil, fmt.Errorf("boltstore: open %s: directory is not writable: %w", dir, err)
	}
	path := filepath.Join(dir, DBFile)
	rc, err := recoverAt(dir, path, o.LockTimeout)
	if err != nil {
		return nil, err
	}
	db, err := openDB(path, o.LockTimeout, rc.need)
	if err != nil {
		return nil, err
	}
	dbf, err := os.Open(path)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	s := &Store{
		dir:       dir,
		audio:     filepath.Join(dir, audioDir),
		db:        db,
		dbf:       dbf,
		logf:      o.Logf,
		sweepDone: make(chan struct{}),
		firstSeq:  rc.nextSeq,
	}
	if err := syncDir(dir); err != nil {
		db.Close()
		dbf.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", dir, err)
	}
	s.c = newCommitter(db, dir, dbf, rc.nextSeq, s.logf)
	s.c.release = s.deleteBlobs
	if err := s.c.replay(rc); err != nil {
		db.Close()
		dbf.Close()
		return nil, fmt.Errorf("boltstore: open %s: replay the log: %w", dir, err)
	}
	s.c.start()
	var ctx context.Context
	ctx, s.sweepCancel = context.WithCancel(context.Background())
	go func() {
		defer close(s.sweepDone)
		s.sweep(ctx)
	}()
	return s, nil
}

func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// recoverAt runs recoverLog on the store in dir with um.db locked, so that
// no other process writes it meanwhile. bbolt takes its own lock right
// after; a process that slips in between makes Open fail with ErrLocked,
// its own recovery done.
func recoverAt(dir, path string, lockTimeout time.Duration) (*recovery, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if isNotExist(err) {
		if err := os.MkdirAll(filepath.Join(dir, logDir), 0o700); err != nil {
			return nil, fmt.Errorf("boltstore: open %s: %w", dir, err)
		}
		seqs, err := segments(dir)
		if err != nil {
			return nil, fmt.Errorf("boltstore: open %s: %w", dir, err)
		}
		rc := &recovery{nextSeq: 1}
		if len(seqs) > 0 {
			rc.nextSeq = seqs[len(seqs)-1] + 1
		}
		return rc, nil
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	defer f.Close()
	ok, err := lockFile(f, lockTimeout)
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	}
	rc, err := recoverLog(dir, f)
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: recover the log: %w", dir, err)
	}
	return rc, nil
}

// openDB opens path with bbolt, checks that it is whole and brings its schema
// up to date. Its memory map has room for need more bytes of pages (a
// replay's) beyond initialMmap.
func openDB(path string, lockTimeout time.Duration, need int64) (db *bolt.DB, err error) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > 0 && fi.Size() < 2*int64(os.Getpagesize()) {
		return nil, fmt.Errorf("%w: %s is %d bytes, too short for its header", ErrCorrupt, path, fi.Size())
	}
	// A file cut short is mapped past its end; reading there faults (SIGBUS)
	// instead of returning an error. Turn the fault into a panic we recover.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if db != nil {
				db.Close()
			}
			db, err = nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, r)
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      lockTimeout,
		FreelistType: bolt.FreelistMapType,
		// Writing the freelist made every commit copy and sort it, and in
		// an epoch it only grows (the pinned base keeps freed pages from
		// reuse): up to a sixth of a flag change's cost. Open rebuilds it
		// from the pages in use instead: about 80 ms for 10,000 mailboxes.
		NoFreelistSync:  true,
		InitialMmapSize: int(mapSize(path, need)),
	})
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s", ErrLocked, path)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrVersionMismatch):
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, path, err)
	case err != nil:
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	if err := checkSize(db, path); err != nil {
		db.Close()
		return nil, err
	}
	if err := migrate(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	if err := ensureSums(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	return db, nil
}

// mapSize is the memory map to open path with: initialMmap, or more when
// the file and need take more.
func mapSize(path string, need int64) int64 {
	var size int64
	if fi, err := os.Stat(path); err == nil {
		size = fi.Size()
	}
	return max(initialMmap, mmapFloor(size+need+reserve(size+need)))
}

// checkSize fails when the file is shorter than the pages the last commit
// says it has: a truncated copy would otherwise fault on first use.
func checkSize(db *bolt.DB, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	return db.View(func(tx *bolt.Tx) error {
		if tx.Size() > fi.Size() {
			return fmt.Errorf("%w: %s is %d bytes, its last commit needs %d", ErrCorrupt, path, fi.Size(), tx.Size())
		}
		return nil
	})
}

// Close waits for the operations in progress, then closes the database.
// Later calls fail with um.ErrClosed.
func (s *Store) Close() error {
	s.sweepCancel()
	<-s.sweepDone
	s.c.close()
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.dbf.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("boltstore: close: %w", err)
	}
	return nil
}

// view runs fn in a read transaction.
func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		return um.ErrClosed
	}
	return s.db.View(fn)
}

// update runs fn in a write transaction, possibly together with the fns of
// other goroutines (see committer). fn may run more than once and must
// leave its results in variables it sets afresh on every run.
func (s *Store) update(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.c.do(ctx, fn)
}

func putU32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

// isNotExist reports whether err says a file is gone.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
