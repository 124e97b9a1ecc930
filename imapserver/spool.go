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

// reader reads the literal from its pieces. It must not be used after
// release.
func (s *spool) reader() io.Reader {
	rs := make([]io.Reader, len(s.chunks))
	for i, c := range s.chunks {
		rs[i] = bytes.NewReader(c)
	}
	return io.MultiReader(rs...)
}

// release gives the pieces back to the pool.
func (s *spool) release() {
	for _, c := range s.chunks {
		pieces.Put(c)
	}
	s.chunks, s.size = nil, 0
}
