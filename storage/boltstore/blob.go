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
	"github.com/embeddedum/um/internal/pieces"
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

// content is what readContent read: the whole content, in chunks, its new
// key and its checksum. One of at most inlineMax bytes goes into the
// database; a larger one stays in the log segment that the deposit's
// frame is in.
type content struct {
	key  blobKey
	size int64
	sum  uint32 // CRC-32C of the content (sums.go)
	data chunks
	big  bool // more than inlineMax bytes
}

func (c content) inline() bool { return !c.big }

// release gives c's chunks back to the pool once nothing refers to them:
// its deposit was applied (bbolt copied a small content into its pages)
// or failed. A second call does nothing.
func (c *content) release() {
	for i, b := range c.data {
		pieces.Put(b)
		c.data[i] = nil
	}
	c.data = nil
}

// maxContent bounds a content: it is read into memory and written as one
// log frame (maxFrame).
var maxContent = 256 << 20 // a variable for a test

// readContent reads r to its end, in memory: the deposit's frame holds the
// content, and the frame is written with the others of its batch, straight
// from the chunks it was read into. The caller releases them.
func readContent(ctx context.Context, r io.Reader) (c content, err error) {
	if _, err := rand.Read(c.key[:]); err != nil {
		return c, fmt.Errorf("boltstore: content key: %w", err)
	}
	defer func() {
		if err != nil {
			c.release()
		}
	}()
	cr := ctxReader{ctx, r}
	var b []byte // the last chunk, partly filled
	sum := uint32(0)
	for {
		if len(b) == cap(b) {
			b = pieces.Get()
			c.data = append(c.data, b)
		}
		n, err := cr.Read(b[len(b):cap(b)])
		sum = crc32.Update(sum, castagnoli, b[len(b):len(b)+n])
		b = b[:len(b)+n]
		c.data[len(c.data)-1] = b
		if c.size += int64(n); c.size > int64(maxContent) {
			return c, fmt.Errorf("boltstore: %w: content of more than %d bytes", um.ErrInvalid, maxContent)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return c, fmt.Errorf("boltstore: read content: %w", err)
		}
	}
	if len(b) == 0 { // the end came with a chunk of its own
		pieces.Put(b)
		c.data = c.data[:len(c.data)-1]
	}
	c.big = c.size > inlineMax
	c.sum = sum
	return c, nil
}

// chunkSize is the size of the pieces contents are read into
// (internal/pieces, which says why pieces and why that size). A piece
// holds more than inlineMax, so a content kept in the database is one
// chunk (or none), put as it is; a batch of 64 30-second deposits, 8
// chunks each, fits IOV_MAX's 1,024 vectors. Eight depositors went from a
// median of 0.62 of plain files to 0.82 with chunks, and the IMAP server's
// peak memory stayed where it was (BENCHMARKS.md).
const chunkSize = pieces.Size

// chunks is a content in pieces, in order, with no empty one. A content
// readContent read is in pieces from internal/pieces, the last one partly
// filled; a replayed one is one piece of its segment.
type chunks [][]byte

func (cs chunks) size() int64 {
	n := int64(0)
	for _, b := range cs {
		n += int64(len(b))
	}
	return n
}

// bytes returns the content as one slice: its only piece when it has one.
func (cs chunks) bytes() []byte {
	switch len(cs) {
	case 0:
		return []byte{}
	case 1:
		return cs[0]
	}
	return bytes.Join(cs, nil)
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
			if s.c.segs.released(g.seg.seq) {
				continue // the whole segment goes
			}
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
