package boltstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Content files: audio/<first two hex digits>/<32 hex digits of the blob
// key>. The 256 subdirectories keep each directory small. A file is written
// whole, fdatasynced, and its directory fsynced before the transaction that
// names it commits, so a committed message always has its whole content.

func (s *Store) blobPath(k blobKey) string {
	h := hex.EncodeToString(k[:])
	return filepath.Join(s.audio, h[:2], h)
}

// blobSet is the set of content files being written.
type blobSet struct {
	mu sync.Mutex
	m  map[blobKey]struct{}
}

func (b *blobSet) add(k blobKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = make(map[blobKey]struct{})
	}
	b.m[k] = struct{}{}
}

func (b *blobSet) remove(k blobKey) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, k)
}

func (b *blobSet) has(k blobKey) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.m[k]
	return ok
}

// ensureDir makes sure the subdirectory for k exists and its entry is
// durable in the audio directory.
func (s *Store) ensureDir(dir string) error {
	s.dirsMu.Lock()
	ok := s.dirs[dir]
	s.dirsMu.Unlock()
	if ok {
		return nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := syncDir(s.audio); err != nil {
		return err
	}
	s.dirsMu.Lock()
	s.dirs[dir] = true
	s.dirsMu.Unlock()
	return nil
}

// ctxReader stops reading when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// writeBlob writes r to a content file, durably, and returns its key and
// size. The caller must call s.blobs.remove(k) when the message is committed
// or the file deleted; until then the sweep leaves it alone. On error
// nothing is left behind.
func (s *Store) writeBlob(ctx context.Context, r io.Reader) (k blobKey, n int64, err error) {
	var f *os.File
	k, f, err = s.pool.take(s)
	if err != nil {
		return k, 0, err
	}
	path := s.blobPath(k)
	defer func() {
		if err != nil {
			os.Remove(path)
			s.blobs.remove(k)
		}
	}()
	defer f.Close()
	buf := copyBufs.Get().(*[]byte)
	n, err = io.CopyBuffer(onlyWriter{f}, ctxReader{ctx, r}, *buf)
	copyBufs.Put(buf)
	if err != nil {
		var werr writeError
		if errors.As(err, &werr) {
			return k, 0, fmt.Errorf("boltstore: write content: %w", werr.err)
		}
		return k, 0, fmt.Errorf("boltstore: read content: %w", err)
	}
	if err := fdatasync(f); err != nil {
		return k, 0, fmt.Errorf("boltstore: sync content: %w", err)
	}
	if err := f.Close(); err != nil {
		return k, 0, fmt.Errorf("boltstore: close content: %w", err)
	}
	return k, n, nil
}

// newBlobFiles creates n empty content files in one subdirectory, with
// their directory entries durable.
func (s *Store) newBlobFiles(n int) ([]blobKey, error) {
	var first [1]byte
	if _, err := rand.Read(first[:]); err != nil {
		return nil, fmt.Errorf("boltstore: content key: %w", err)
	}
	keys := make([]blobKey, 0, n)
	for len(keys) < n {
		var k blobKey
		if _, err := rand.Read(k[:]); err != nil {
			return nil, fmt.Errorf("boltstore: content key: %w", err)
		}
		k[0] = first[0] // one directory, so one directory fsync for all
		if len(keys) == 0 {
			if err := s.ensureDir(filepath.Dir(s.blobPath(k))); err != nil {
				return nil, fmt.Errorf("boltstore: content directory: %w", err)
			}
		}
		s.blobs.add(k)
		f, err := os.OpenFile(s.blobPath(k), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			s.blobs.remove(k)
			s.dropBlobs(keys)
			return nil, fmt.Errorf("boltstore: create content file: %w", err)
		}
		f.Close()
		keys = append(keys, k)
	}
	if err := syncDir(filepath.Dir(s.blobPath(keys[0]))); err != nil {
		s.dropBlobs(keys)
		return nil, fmt.Errorf("boltstore: sync content directory: %w", err)
	}
	return keys, nil
}

// dropBlobs deletes unused pool files.
func (s *Store) dropBlobs(keys []blobKey) {
	for _, k := range keys {
		os.Remove(s.blobPath(k))
		s.blobs.remove(k)
	}
}

// blobPool holds empty content files made ahead of need, in batches that
// share one directory fsync. A deposit then costs the fdatasync of its
// content and the commit, and not the fsync of a directory as well.
type blobPool struct {
	mu      sync.Mutex
	keys    []blobKey
	filling bool
	closed  bool
	wg      sync.WaitGroup
}

const poolBatch = 32

// take returns an empty content file, from the pool or, when it is empty,
// made on the spot; it starts a refill when the pool runs low.
func (p *blobPool) take(s *Store) (blobKey, *os.File, error) {
	p.mu.Lock()
	var k blobKey
	ok := len(p.keys) > 0
	if ok {
		k = p.keys[len(p.keys)-1]
		p.keys = p.keys[:len(p.keys)-1]
	}
	if len(p.keys) < poolBatch/2 && !p.filling && !p.closed {
		p.filling = true
		p.wg.Add(1)
		go p.fill(s)
	}
	p.mu.Unlock()
	if !ok {
		keys, err := s.newBlobFiles(1)
		if err != nil {
			return k, nil, err
		}
		k = keys[0]
	}
	f, err := os.OpenFile(s.blobPath(k), os.O_WRONLY, 0)
	if err != nil {
		os.Remove(s.blobPath(k))
		s.blobs.remove(k)
		return k, nil, fmt.Errorf("boltstore: open content file: %w", err)
	}
	return k, f, nil
}

func (p *blobPool) fill(s *Store) {
	defer p.wg.Done()
	keys, err := s.newBlobFiles(poolBatch)
	if err != nil {
		s.logf("boltstore: prepare content files: %v", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.filling = false
	if p.closed {
		s.dropBlobs(keys)
		return
	}
	p.keys = append(p.keys, keys...)
}

// close deletes the files left in the pool.
func (p *blobPool) close(s *Store) {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	s.dropBlobs(p.keys)
	p.keys = nil
}

// onlyWriter hides the file's ReadFrom, so that io.CopyBuffer uses our
// buffer and reports write errors as writeError.
type onlyWriter struct{ f *os.File }

type writeError struct{ err error }

func (e writeError) Error() string { return e.err.Error() }

func (w onlyWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		return n, writeError{err}
	}
	return n, nil
}

// deleteBlobs removes content files no message names any more. A failure
// leaves an orphan for the next sweep, so it is only logged.
func (s *Store) deleteBlobs(keys []blobKey) {
	for _, k := range keys {
		if err := os.Remove(s.blobPath(k)); err != nil && !isNotExist(err) {
			s.logf("boltstore: delete content file: %v", err)
		}
	}
}

// sweep deletes content files that no message names: those of deposits a
// crash or a failed commit interrupted, and of removals a crash interrupted
// before the file was deleted. It runs in the background after Open, so
// start-up does not wait for a walk of every file.
func (s *Store) sweep(ctx context.Context) {
	subs, err := os.ReadDir(s.audio)
	if err != nil {
		s.logf("boltstore: sweep: %v", err)
		return
	}
	for _, sub := range subs {
		if ctx.Err() != nil {
			return
		}
		if !sub.IsDir() || len(sub.Name()) != 2 {
			continue
		}
		dir := filepath.Join(s.audio, sub.Name())
		ents, err := os.ReadDir(dir)
		if err != nil {
			s.logf("boltstore: sweep: %v", err)
			continue
		}
		// A file is checked against the writes in progress before the
		// database is read: one that was in progress then and committed
		// since is skipped, never taken for an orphan.
		var cand []blobKey
		for _, e := range ents {
			var k blobKey
			if n, err := hex.Decode(k[:], []byte(e.Name())); err != nil || n != len(k) || len(e.Name()) != 2*len(k) {
				continue
			}
			if !s.blobs.has(k) {
				cand = append(cand, k)
			}
		}
		if len(cand) == 0 {
			continue
		}
		var orphans []blobKey
		if err := s.view(ctx, func(tx *bolt.Tx) error {
			orphans = orphans[:0]
			b := tx.Bucket(bucketBlobs)
			for _, k := range cand {
				if b.Get(k[:]) == nil {
					orphans = append(orphans, k)
				}
			}
			return nil
		}); err != nil {
			return
		}
		s.deleteBlobs(orphans)
	}
}
