package boltstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// chunkSizes are the content sizes around the boundaries of chunks and of
// inline contents.
var chunkSizes = []int{0, 1, inlineMax, inlineMax + 1, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 1}

// readers are the ways a content arrives: whole, a byte per Read, with
// io.EOF on the Read that gives the last bytes, and half of what is asked.
var readers = []struct {
	name string
	r    func([]byte) io.Reader
}{
	{"whole", func(b []byte) io.Reader { return bytes.NewReader(b) }},
	{"one byte", func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
	{"EOF with data", func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) }},
	{"half", func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) }},
}

// TestReadContentChunks checks how readContent cuts a content: into full
// chunks of chunkSize bytes and a last one with the rest, none empty, so a
// content of at most inlineMax bytes is one slice for the database; its
// checksum is that of the whole content.
func TestReadContentChunks(t *testing.T) {
	for _, n := range chunkSizes {
		for _, rd := range readers {
			t.Run(fmt.Sprintf("%d/%s", n, rd.name), func(t *testing.T) {
				want := randomBytes(n)
				c, err := readContent(ctx, rd.r(want))
				if err != nil {
					t.Fatalf("readContent() = %v", err)
				}
				defer c.release()
				if got := bytes.Join(c.data, nil); !bytes.Equal(got, want) {
					t.Fatalf("content read is %d bytes and differs, want %d", len(got), n)
				}
				if c.size != int64(n) || c.data.size() != int64(n) {
					t.Errorf("size = %d, chunks hold %d, want %d", c.size, c.data.size(), n)
				}
				if l := (n + chunkSize - 1) / chunkSize; len(c.data) != l {
					t.Errorf("%d chunks, want %d", len(c.data), l)
				}
				for i, b := range c.data {
					if len(b) == 0 || cap(b) != chunkSize || (i < len(c.data)-1 && len(b) != chunkSize) {
						t.Errorf("chunk %d of %d holds %d bytes of %d", i, len(c.data), len(b), cap(b))
					}
				}
				if sum := crc32.Checksum(want, castagnoli); c.sum != sum {
					t.Errorf("sum = %08x, want %08x", c.sum, sum)
				}
				if c.inline() != (n <= inlineMax) {
					t.Errorf("inline() = %v for %d bytes", c.inline(), n)
				}
				if c.inline() && !bytes.Equal(c.data.bytes(), want) {
					t.Errorf("bytes() of an inline content differs")
				}
			})
		}
	}
}

// TestReadContentFails checks that a reader's error, a cancelled context
// and a content past maxContent end the read with an error that says so,
// and that the chunks read until then go back (none is left to release).
func TestReadContentFails(t *testing.T) {
	old := maxContent
	maxContent = 2*chunkSize + 5
	t.Cleanup(func() { maxContent = old })
	broken := errors.New("connection reset")
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		r    io.Reader
		want error
	}{
		{"reader fails", ctx, io.MultiReader(bytes.NewReader(randomBytes(chunkSize+10)), iotest.ErrReader(broken)), broken},
		{"cancelled", cancelled, bytes.NewReader(randomBytes(10)), context.Canceled},
		{"one byte too many", ctx, bytes.NewReader(randomBytes(maxContent + 1)), um.ErrInvalid},
		{"one byte too many, a byte per Read", ctx, iotest.OneByteReader(bytes.NewReader(randomBytes(maxContent + 1))), um.ErrInvalid},
		{"endless", ctx, endless{}, um.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := readContent(tc.ctx, tc.r)
			if !errors.Is(err, tc.want) {
				t.Fatalf("readContent() = %v, want %v", err, tc.want)
			}
			if c.data != nil {
				t.Errorf("readContent() failed and kept %d chunks", len(c.data))
			}
		})
	}
	c, err := readContent(ctx, bytes.NewReader(randomBytes(maxContent)))
	if err != nil || c.size != int64(maxContent) {
		t.Fatalf("readContent() of maxContent bytes = %d bytes, %v; want them read", c.size, err)
	}
	c.release()
}

// endless gives zeros for ever.
type endless struct{}

func (endless) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestDepositChunkBoundaries deposits contents of the sizes around the
// boundaries of chunks and of inline contents, from eight goroutines at
// once and from readers giving them in every way, and reads each back
// byte for byte: live, and after a power loss that lost every page of
// their commits, so that Open replays them from the log. A content past
// maxContent is refused with ErrInvalid and leaves nothing: no message,
// no byte in the log.
func TestDepositChunkBoundaries(t *testing.T) {
	old := maxContent
	maxContent = 3*chunkSize + 1 // the largest size here
	t.Cleanup(func() { maxContent = old })
	s := openStore(t)
	newMailbox(t, s, "1001")
	synced := readDB(t, s.dir)

	// A lone small deposit commits synced, with no log: a large one first
	// opens the log's epoch, which the others join.
	first := randomBytes(2*chunkSize + 3)
	want := map[uuid.UUID][]byte{appendMsg(t, s, "1001", um.Inbox, first).ID: first}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, n := range chunkSizes {
				content := randomBytes(n)
				rd := readers[(g+i)%len(readers)]
				m, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, rd.r(content))
				if err != nil {
					t.Errorf("Append() of %d bytes, %s = %v", n, rd.name, err)
					return
				}
				if m.Size != int64(n) {
					t.Errorf("Append() of %d bytes, %s: Size = %d", n, rd.name, m.Size)
				}
				mu.Lock()
				want[m.ID] = content
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	// What the disk holds if power goes now, before the checks below
	// commit anything synced.
	crash := copyDir(t, s.dir)
	losePower(t, crash, synced, readDB(t, s.dir))

	logBytes := segmentBytes(t, s.dir)
	for _, rd := range readers {
		_, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, rd.r(randomBytes(maxContent+1)))
		if !errors.Is(err, um.ErrInvalid) {
			t.Errorf("Append() of maxContent+1 bytes, %s = %v, want ErrInvalid", rd.name, err)
		}
	}
	if n := segmentBytes(t, s.dir); n != logBytes {
		t.Errorf("refused contents wrote %d bytes to the log", n-logBytes)
	}

	check := func(when string, s *Store) {
		t.Helper()
		msgs, err := s.List(ctx, "1001", um.Inbox)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != len(want) {
			t.Errorf("%s: List() = %d messages, want %d", when, len(msgs), len(want))
		}
		for _, m := range msgs {
			content, ok := want[m.ID]
			if !ok {
				t.Errorf("%s: message %s of %d bytes was never acknowledged", when, m.ID, m.Size)
				continue
			}
			if b := readAll(t, s, "1001", m.ID); !bytes.Equal(b, content) {
				t.Errorf("%s: content of UID %d is %d bytes and differs, want %d", when, m.UID, len(b), len(content))
			}
		}
		if rep := mustCheck(t, s); len(rep.Problems) != 0 {
			t.Errorf("%s: Check() = %v, want no problems", when, rep.Problems)
		}
	}
	check("live", s)

	check("replayed", openAt(t, crash))
}

// segmentBytes returns the bytes written to the log segments in dir.
func segmentBytes(t *testing.T, dir string) int64 {
	t.Helper()
	seqs, err := segments(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := int64(0)
	for _, seq := range seqs {
		fi, err := os.Stat(segPath(dir, seq))
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}
