package imapserver

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/embeddedum/um/internal/pieces"
)

// TestSpoolKeepsTheLiteral: a literal spooled in pieces reads back byte
// for byte, whatever its size against the pieces' and however the client's
// bytes arrive, and the spool tells whether it holds a NUL.
func TestSpoolKeepsTheLiteral(t *testing.T) {
	for _, size := range []int{0, 1, pieces.Size - 1, pieces.Size, pieces.Size + 1, 3*pieces.Size + 5} {
		lit := make([]byte, size)
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		for i := range lit {
			lit[i] = byte(1 + rng.IntN(255)) // no NUL
		}
		var s spool
		if err := s.readFull(iotest.OneByteReader(bytes.NewReader(lit)), size); err != nil {
			t.Fatalf("%d bytes: readFull = %v", size, err)
		}
		if s.hasNUL() {
			t.Errorf("%d bytes: hasNUL = true for a literal without one", size)
		}
		if !bytes.Equal(s.bytes(), lit) {
			t.Errorf("%d bytes: bytes() differs from the literal", size)
		}
		if err := iotest.TestReader(s.reader(), lit); err != nil {
			t.Errorf("%d bytes: reading the spool back: %v", size, err)
		}
		if len(s.chunks) != 0 {
			t.Errorf("%d bytes: read through, the spool still holds %d pieces, want none (back in the pool)", size, len(s.chunks))
		}
		if size > 0 {
			lit[size-1] = 0
			var n spool
			n.readFull(bytes.NewReader(lit), size)
			if !n.hasNUL() {
				t.Errorf("%d bytes: hasNUL = false with a NUL as the last byte", size)
			}
			n.release()
		}
		s.release()
		if s.size != 0 || len(s.chunks) != 0 {
			t.Errorf("%d bytes: after release the spool holds %d bytes in %d pieces", size, s.size, len(s.chunks))
		}
	}
}

// TestSpoolShortLiteral: a client that sends less than its literal's
// announced size gets the read's error, never a shorter message.
func TestSpoolShortLiteral(t *testing.T) {
	var s spool
	err := s.readFull(bytes.NewReader(make([]byte, pieces.Size+10)), pieces.Size+20)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("readFull of a short literal = %v, want io.ErrUnexpectedEOF", err)
	}
	s.release()
}

// TestSpoolReaderGivesPiecesBack: what the store has read of a spooled
// literal is back in the pool at once, and release after a partial read
// gives back the rest, each piece once.
func TestSpoolReaderGivesPiecesBack(t *testing.T) {
	lit := bytes.Repeat([]byte("x"), 3*pieces.Size+7)
	var s spool
	if err := s.readFull(bytes.NewReader(lit), len(lit)); err != nil {
		t.Fatal(err)
	}
	r := s.reader()
	got := make([]byte, pieces.Size+10)
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("reading the first %d bytes: %v", len(got), err)
	}
	if !bytes.Equal(got, lit[:len(got)]) {
		t.Errorf("the first %d bytes read differ from the literal's", len(got))
	}
	if len(s.chunks) != 3 {
		t.Errorf("after reading past the first piece the spool holds %d pieces, want 3", len(s.chunks))
	}
	s.release()
	if len(s.chunks) != 0 || s.size != 0 {
		t.Errorf("after release the spool holds %d bytes in %d pieces, want none", s.size, len(s.chunks))
	}
}
