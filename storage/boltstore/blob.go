package boltstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/embeddedum/um"
	bolt "go.etcd.io/bbolt"
)

// Content files: audio/<first two hex digits>/<32 hex digits of the blob
// key>. The 256 subdirectories keep each directory small. Deposits no
// longer make them (their content stays in the log); they are what older
// versions wrote and what a backup holds, written whole, fdatasynced, and
// their directory fsynced before a transaction names them.

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

// content is what readContent read: the whole content, its new key and
// its checksum. One of at most inlineMax bytes goes into the database;
// a larger one stays in the log segment that the deposit's frame is in.
type content struct {
	key  blobKey
	size int64
	sum  uint32 // CRC-32C of the content (sums.go)
	data []byte
	big  bool // more than inlineMax bytes
}

func (c content) inline() bool { return !c.big }

// maxContent bounds a content: it is read into memory and written as one
// log frame (maxFrame).
var maxContent = 256 << 20 // a variable for a test

// readContent reads r to its end, in memory: the deposit's frame holds the
// content, and the frame is written whole with the others of its batch,
// straight from this buffer. A reader that tells its length (a
// bytes.Reader, a strings.Reader) is read into a buffer of that size.
func readContent(ctx context.Context, r io.Reader) (c content, err error) {
	if _, err := rand.Read(c.key[:]); err != nil {
		return c, fmt.Errorf("boltstore: content key: %w", err)
	}
	size := 512
	if l, ok := r.(interface{ Len() int }); ok {
		size = l.Len() + 1 // one more, to see the end without growing
	}
	b := getContentBuf(size)
	cr := ctxReader{ctx, r}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := cr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if len(b) > maxContent {
			return c, fmt.Errorf("boltstore: %w: content of more than %d bytes", um.ErrInvalid, maxContent)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return c, fmt.Errorf("boltstore: read content: %w", err)
		}
	}
	c.data = b
	c.size = int64(len(c.data))
	c.big = c.size > inlineMax
	c.sum = crc32.Checksum(c.data, castagnoli)
	return c, nil
}

// contentBufs keeps the buffers contents were read into, for the next
// deposits: a deposit allocated and cleared its content's size otherwise,
// and the collector's work on those took processor time from deposits.
// Only buffers of up to 64 KiB are kept: under an IMAP server's load the
// pool held 8 MiB of voicemail-sized ones at its peak, which the heap's
// headroom doubled. That costs large deposits: eight depositors of
// 30-second messages reached 0.82-0.86 of plain files in alternated runs,
// 0.99-1.03 with buffers of up to 4 MiB kept (BENCHMARKS.md).
var contentBufs sync.Pool

const (
	minPooled = 64 << 10
	maxPooled = 64 << 10
)

// getContentBuf returns an empty buffer of at least n bytes' capacity.
func getContentBuf(n int) []byte {
	if p, ok := contentBufs.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:0]
	}
	return make([]byte, 0, max(n, minPooled))
}

// putContentBuf gives back a buffer of readContent once nothing refers to
// it: its deposit was applied (bbolt copied a small content into its
// pages) or failed.
func putContentBuf(b []byte) {
	if cap(b) >= minPooled && cap(b) <= maxPooled {
		contentBufs.Put(&b)
	}
}

// memContent is a small content read out of the database. Like a file it
// seeks, which rendering uses to serve part of a message.
type memContent struct{ *bytes.Reader }

func (memContent) Close() error { return nil }

// gone is a content no message names any more: a content file, or a
// range of a log segment.
type gone struct {
	k   blobKey
	seg *segLoc
}

// deleteBlobs removes content files no message names any more and frees
// the ranges of log segments. It runs once the removal is durable, and for
// a range only once no replay can read a frame in it (committer.freed): a
// frame whose bytes were freed fails its checksum and would end the log
// there. A failure leaves an orphan file for the next sweep, or a range
// that its segment's deletion frees, so it is only logged.
func (s *Store) deleteBlobs(gs []gone) {
	for _, g := range s.pins.filter(gs) { // a backup or check may still need them
		if g.seg != nil {
			if err := s.punch(*g.seg); err != nil {
				s.logf("boltstore: free log range: %v", err)
			}
			continue
		}
		if err := os.Remove(s.blobPath(g.k)); err != nil && !isNotExist(err) {
			s.logf("boltstore: delete content file: %v", err)
		}
	}
}

// sweep deletes content files that no message names: those of deposits a
// crash or a failed commit interrupted, and of removals a crash interrupted
// before the file was deleted. It runs in the background after Open, so
// start-up does not wait for a walk of every file.
func (s *Store) sweep(ctx context.Context) {
	s.sweepSegments(ctx)
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
		var orphans []gone
		if err := s.view(ctx, func(tx *bolt.Tx) error {
			orphans = orphans[:0]
			b := tx.Bucket(bucketBlobs)
			for _, k := range cand {
				if b.Get(k[:]) == nil {
					orphans = append(orphans, gone{k: k})
				}
			}
			return nil
		}); err != nil {
			return
		}
		s.deleteBlobs(orphans)
	}
}
