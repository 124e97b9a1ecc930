package imapserver

import (
	"bytes"
	"io"

	"github.com/embeddedum/um/internal/pieces"
)

// spool holds an APPEND literal of up to spoolInMemory bytes in pooled
// pieces (internal/pieces) until release: a buffer of the literal's size
// was a sixth of the bytes the server allocated under imaptest's load.
type spool struct {
	chunks [][]byte // full pieces, the last one partly filled
	size   int
}

// readFull reads exactly size bytes of r into the spool.
func (s *spool) readFull(r io.Reader, size int) error {
	for s.size < size {
		c := pieces.Get()
		n := min(size-s.size, pieces.Size)
		s.chunks = append(s.chunks, c[:n])
		if _, err := io.ReadFull(r, c[:n]); err != nil {
			return err
		}
		s.size += n
	}
	return nil
}

// hasNUL reports whether the literal holds a NUL byte.
func (s *spool) hasNUL() bool {
	for _, c := range s.chunks {
		if bytes.IndexByte(c, 0) >= 0 {
			return true
		}
	}
	return false
}

// bytes returns the literal in one new slice.
func (s *spool) bytes() []byte { return bytes.Join(s.chunks, nil) }

// reader reads the literal once, from its pieces, and gives each piece
// back to the pool as soon as it has been read through. The store copies
// the literal into pieces of its own and holds them until its commit, and
// the pieces it takes are then the ones just read: while a voicemail's
// APPEND waits for the commit the server holds one copy of the literal
// instead of two (the pool's peak under imaptest's stress run was 100
// pieces, 6.4 MB; BENCHMARKS.md). It must not be used after release.
func (s *spool) reader() io.Reader { return &spoolReader{s: s} }

// spoolReader is what spool.reader returns: it reads s.chunks[0] from off
// and drops each chunk from s once read.
type spoolReader struct {
	s   *spool
	off int
}

func (r *spoolReader) Read(p []byte) (int, error) {
	s := r.s
	for len(s.chunks) > 0 && r.off == len(s.chunks[0]) {
		r.drop()
	}
	if len(s.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.chunks[0][r.off:])
	if r.off += n; r.off == len(s.chunks[0]) {
		r.drop() // before the store asks for its next piece
	}
	return n, nil
}

// drop gives the first chunk back to the pool; the spool no longer
// holds it.
func (r *spoolReader) drop() {
	s := r.s
	pieces.Put(s.chunks[0])
	s.chunks[0] = nil
	s.chunks, r.off = s.chunks[1:], 0
}

// release gives the pieces back to the pool.
func (s *spool) release() {
	for _, c := range s.chunks {
		pieces.Put(c)
	}
	s.chunks, s.size = nil, 0
}
