package imapserver

import (
	"bytes"
	"io"
	"sync"
)

// spoolChunk is the size of the pieces an APPEND's literal is held in.
// Clients append e-mails of a few kilobytes and voicemails of a few
// hundred: one buffer of the literal's size each time made every APPEND
// allocate and clear that much, a sixth of the bytes the server allocated
// under imaptest's load, and the collector's work that came with it. The
// pieces go back to a pool, so what it keeps is bounded by the literals
// in flight, and a literal wastes less than one piece.
const spoolChunk = 64 << 10

var spoolChunks = sync.Pool{New: func() any { return new([spoolChunk]byte) }}

// spool holds a literal in pooled pieces until release.
type spool struct {
	chunks []*[spoolChunk]byte
	size   int
}

// readFull reads exactly size bytes of r into the spool.
func (s *spool) readFull(r io.Reader, size int) error {
	for s.size < size {
		c := spoolChunks.Get().(*[spoolChunk]byte)
		s.chunks = append(s.chunks, c)
		n := min(size-s.size, spoolChunk)
		if _, err := io.ReadFull(r, c[:n]); err != nil {
			return err
		}
		s.size += n
	}
	return nil
}

// piece returns the spool's i-th piece, the last one cut to the size.
func (s *spool) piece(i int) []byte {
	return s.chunks[i][:min(spoolChunk, s.size-i*spoolChunk)]
}

// hasNUL reports whether the literal holds a NUL byte.
func (s *spool) hasNUL() bool {
	for i := range s.chunks {
		if bytes.IndexByte(s.piece(i), 0) >= 0 {
			return true
		}
	}
	return false
}

// bytes returns the literal in one new slice.
func (s *spool) bytes() []byte {
	b := make([]byte, 0, s.size)
	for i := range s.chunks {
		b = append(b, s.piece(i)...)
	}
	return b
}

// reader reads the literal from its pieces. It must not be used after
// release.
func (s *spool) reader() *spoolReader { return &spoolReader{s: s} }

// release gives the pieces back to the pool.
func (s *spool) release() {
	for i, c := range s.chunks {
		spoolChunks.Put(c)
		s.chunks[i] = nil
	}
	s.chunks, s.size = nil, 0
}

type spoolReader struct {
	s   *spool
	off int
}

func (r *spoolReader) Read(p []byte) (int, error) {
	if r.off >= r.s.size {
		return 0, io.EOF
	}
	n := copy(p, r.s.piece(r.off / spoolChunk)[r.off%spoolChunk:])
	r.off += n
	return n, nil
}

// Len tells a store what is left, as a bytes.Reader does, so that it can
// size what it reads the content into.
func (r *spoolReader) Len() int { return r.s.size - r.off }
