package boltstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
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

// inlineMax is the largest content kept in the database instead of a file
// of its own. An e-mail a client appends is typically a few kilobytes: in
// the database it costs no file creation, no directory entry and no
// fdatasync of its own, only a few more pages in the commit that records
// the message. Voicemail audio (16 KiB is half a second of 8 kHz PCM) still
// goes to files.
const inlineMax = 16 << 10

// content is what writeContent stored: a content file, or, when data is
// not nil, a small content to be put in the database by the transaction
// that records its message.
type content struct {
	key  blobKey
	size int64
	sum  uint32 // CRC-32C of the content (sums.go)
	data []byte // the whole content when it is kept in the database
}

func (c content) inline() bool { return c.data != nil }

// writeContent reads r to its end. Up to inlineMax bytes stay in memory, to
// go in the database; more go to a content file, written durably, and the
// caller must call s.blobs.remove(c.key) when the message is committed or
// the file deleted; until then the sweep leaves it alone. On error nothing
// is left behind.
func (s *Store) writeContent(ctx context.Context, r io.Reader) (c content, err error) {
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	buf := *bufp
	cr := ctxReader{ctx, r}
	n, err := io.ReadFull(cr, buf[:inlineMax+1])
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		if _, err := rand.Read(c.key[:]); err != nil {
			return c, fmt.Errorf("boltstore: content key: %w", err)
		}
		c.size = int64(n)
		c.data = append(make([]byte, 0, n), buf[:n]...) // not nil, also when empty
		c.sum = crc32.Checksum(c.data, castagnoli)
		return c, nil
	case err != nil:
		return c, fmt.Errorf("boltstore: read content: %w", err)
	}
	var f *os.File
	c.key, f, err = s.pool.take(s)
	if err != nil {
		return c, err
	}
	path := s.blobPath(c.key)
	defer func() {
		if err != nil {
			os.Remove(path)
			s.blobs.remove(c.key)
		}
	}()
	defer f.Close()
	// Fill the rest of the buffer first, so the file is written in the same
	// whole buffers as without the look at the start.
	m, err := io.ReadFull(cr, buf[n:])
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return c, fmt.Errorf("boltstore: read content: %w", err)
	}
	n += m
	sum := crc32.New(castagnoli)
	sum.Write(buf[:n])
	if _, err := f.Write(buf[:n]); err != nil {
		return c, fmt.Errorf("boltstore: write content: %w", err)
	}
	rest, err := io.CopyBuffer(onlyWriter{f}, io.TeeReader(cr, sum), buf)
	if err != nil {
		var werr writeError
		if errors.As(err, &werr) {
			return c, fmt.Errorf("boltstore: write content: %w", werr.err)
		}
		return c, fmt.Errorf("boltstore: read content: %w", err)
	}
	if err := fdatasync(f); err != nil {
		return c, fmt.Errorf("boltstore: sync content: %w", err)
	}
	if err := f.Close(); err != nil {
		return c, fmt.Errorf("boltstore: close content: %w", err)
	}
	c.size = int64(n) + rest
	c.sum = sum.Sum32()
	return c, nil
}

// memContent is a small content read out of the database. Like a file it
// seeks, which rendering uses to serve part of a message.
type memContent struct{ *bytes.Reader }

func (memContent) Close() error { return nil }

// pooledFile is an empty content file, open for writing, whose directory
// entry is durable.
type pooledFile struct {
	k blobKey
	f *os.File
}

// errStopped ends a refill that Close interrupted.
var errStopped = errors.New("boltstore: store closing")

// newBlobFiles creates n empty content files in one subdirectory, with
// their directory entries durable, and returns them open for writing. It
// gives up, deleting what it made, when stop is closed.
func (s *Store) newBlobFiles(n int, stop <-chan struct{}) ([]pooledFile, error) {
	var first [1]byte
	if _, err := rand.Read(first[:]); err != nil {
		return nil, fmt.Errorf("boltstore: content key: %w", err)
	}
	files := make([]pooledFile, 0, n)
	for len(files) < n {
		select {
		case <-stop:
			s.dropFiles(files)
			return nil, errStopped
		default:
		}
		var k blobKey
		if _, err := rand.Read(k[:]); err != nil {
			s.dropFiles(files)
			return nil, fmt.Errorf("boltstore: content key: %w", err)
		}
		k[0] = first[0] // one directory, so one directory fsync for all
		if len(files) == 0 {
			if err := s.ensureDir(filepath.Dir(s.blobPath(k))); err != nil {
				return nil, fmt.Errorf("boltstore: content directory: %w", err)
			}
		}
		s.blobs.add(k)
		f, err := os.OpenFile(s.blobPath(k), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			s.blobs.remove(k)
			s.dropFiles(files)
			return nil, fmt.Errorf("boltstore: create content file: %w", err)
		}
		files = append(files, pooledFile{k, f})
	}
	if err := syncDir(filepath.Dir(s.blobPath(files[0].k))); err != nil {
		s.dropFiles(files)
		return nil, fmt.Errorf("boltstore: sync content directory: %w", err)
	}
	return files, nil
}

// dropFiles closes and deletes unused pool files.
func (s *Store) dropFiles(files []pooledFile) {
	for _, pf := range files {
		pf.f.Close()
		os.Remove(s.blobPath(pf.k))
		s.blobs.remove(pf.k)
	}
}

// blobPool holds empty content files made ahead of need. A goroutine
// started by Open refills it in batches of poolBatch files in one
// subdirectory, which share one directory fsync, whenever it falls below
// poolLow, so a deposit costs the fdatasync of its content and the commit,
// and neither a file creation nor a directory fsync. Only when deposits
// outrun the refill and the pool is empty does a deposit create its file
// itself, with a directory fsync of its own.
type blobPool struct {
	mu        sync.Mutex
	files     []pooledFile
	refilling bool       // a refill was asked for and has not finished
	idle      *sync.Cond // broadcast when refilling turns false
	closed    bool

	wake chan struct{} // buffered 1
	stop chan struct{} // closed by close
	done chan struct{} // closed when run returns
}

const (
	poolBatch = 32
	poolLow   = 16
)

// start launches the refill goroutine and its first refill.
func (p *blobPool) start(s *Store) {
	p.idle = sync.NewCond(&p.mu)
	p.wake = make(chan struct{}, 1)
	p.stop = make(chan struct{})
	p.done = make(chan struct{})
	p.refilling = true
	p.wake <- struct{}{}
	go p.run(s)
}

func (p *blobPool) run(s *Store) {
	defer close(p.done)
	for {
		select {
		case <-p.stop:
			return
		case <-p.wake:
		}
		for {
			p.mu.Lock()
			if len(p.files) >= poolLow {
				break
			}
			p.mu.Unlock()
			files, err := s.newBlobFiles(poolBatch, p.stop)
			p.mu.Lock()
			if err != nil {
				// Deposits make their own files meanwhile and report
				// the error, if it lasts, to their callers; the next
				// deposit asks for a refill again.
				if err != errStopped {
					s.logf("boltstore: prepare content files: %v", err)
				}
				break
			}
			if p.closed {
				p.mu.Unlock()
				s.dropFiles(files)
				return
			}
			p.files = append(p.files, files...)
			p.mu.Unlock()
		}
		p.refilling = false
		p.idle.Broadcast()
		p.mu.Unlock()
	}
}

// take returns an empty content file, open for writing, from the pool or,
// when it is empty, made on the spot; it asks for a refill when the pool
// runs low.
func (p *blobPool) take(s *Store) (blobKey, *os.File, error) {
	p.mu.Lock()
	var pf pooledFile
	ok := len(p.files) > 0
	if ok {
		pf = p.files[len(p.files)-1]
		p.files = p.files[:len(p.files)-1]
	}
	if len(p.files) < poolLow && !p.refilling && !p.closed {
		p.refilling = true
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
	p.mu.Unlock()
	if ok {
		return pf.k, pf.f, nil
	}
	files, err := s.newBlobFiles(1, nil)
	if err != nil {
		return blobKey{}, nil, err
	}
	return files[0].k, files[0].f, nil
}

// waitIdle waits until no refill is asked for or running.
func (p *blobPool) waitIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.refilling && !p.closed {
		p.idle.Wait()
	}
}

// close stops the refill and deletes the files left in the pool.
func (p *blobPool) close(s *Store) {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.idle.Broadcast()
	p.mu.Unlock()
	if already {
		return
	}
	close(p.stop)
	<-p.done
	p.mu.Lock()
	files := p.files
	p.files = nil
	p.mu.Unlock()
	s.dropFiles(files)
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
	for _, k := range s.pins.filter(keys) { // a backup or check may still need them
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
