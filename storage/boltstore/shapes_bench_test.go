package boltstore

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um/wav"
)

// BenchmarkDurableShapes measures, without the store, what the disk gives
// three ways of making 30-second messages durable, in BenchmarkDepositRatio's
// alternating rounds: "file", a plain file each (create, write, fsync,
// close), the deposit goal's baseline; "own", each writer appending to a
// file of its own and fdatasyncing it, as writers that write and sync
// their own frames would; and "group", the log's group commit in its
// simplest form, one goroutine writing every buffer queued meanwhile with
// one pwritev at the end of one file and one fdatasync for all. The store
// adds a database commit and hand-offs to "group"; its own/file and
// group/file ratios bound what each shape can reach on this disk.
func BenchmarkDurableShapes(b *testing.B) {
	audio := wav.Tone(30 * time.Second)
	for _, par := range []int{1, 8} {
		b.Run(fmt.Sprintf("par%d", par), func(b *testing.B) {
			dir := b.TempDir()
			// A file per writer: a round's goroutines take one each.
			own := make(chan *appendFile, par)
			for i := range par {
				own <- &appendFile{f: createFile(b, filepath.Join(dir, fmt.Sprint("own", i)))}
			}
			ownWrite := func(int64) {
				a := <-own
				defer func() { own <- a }()
				if err := a.write([][]byte{audio}); err != nil {
					b.Fatal(err)
				}
			}
			g := newGroupFile(createFile(b, filepath.Join(dir, "group")))
			defer g.close()
			group := func(int64) {
				if err := g.write(audio); err != nil {
					b.Fatal(err)
				}
			}
			t := inRounds(b, par, plainFiles(b, dir, audio, false), ownWrite, group)
			tFile, tOwn, tGroup := t[0].Seconds(), t[1].Seconds(), t[2].Seconds()
			b.ReportMetric(float64(b.N)/tFile, "file-msgs/s")
			b.ReportMetric(float64(b.N)/tOwn, "own-msgs/s")
			b.ReportMetric(float64(b.N)/tGroup, "group-msgs/s")
			b.ReportMetric(tFile/tOwn, "own/file")
			b.ReportMetric(tFile/tGroup, "group/file")
		})
	}
}

func createFile(b *testing.B, path string) *os.File {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

// appendFile appends buffers to f and fdatasyncs it.
type appendFile struct {
	f   *os.File
	off int64
}

func (a *appendFile) write(bufs [][]byte) error {
	n := int64(0)
	for _, b := range bufs {
		n += int64(len(b))
	}
	if err := writeAt(a.f, bufs, a.off); err != nil {
		return err
	}
	a.off += n
	return fdatasync(a.f)
}

// groupFile is a group commit into one file: write queues a buffer and
// waits until a flush covered it; one goroutine flushes everything queued
// while the last flush ran.
type groupFile struct {
	mu     sync.Mutex
	more   *sync.Cond
	queue  [][]byte
	heard  []chan error
	closed bool
	done   chan struct{}
}

func newGroupFile(f *os.File) *groupFile {
	g := &groupFile{done: make(chan struct{})}
	g.more = sync.NewCond(&g.mu)
	go g.run(&appendFile{f: f})
	return g
}

func (g *groupFile) write(b []byte) error {
	heard := make(chan error, 1)
	g.mu.Lock()
	g.queue = append(g.queue, b)
	g.heard = append(g.heard, heard)
	g.more.Signal()
	g.mu.Unlock()
	return <-heard
}

func (g *groupFile) run(a *appendFile) {
	defer close(g.done)
	for {
		g.mu.Lock()
		for len(g.queue) == 0 && !g.closed {
			g.more.Wait()
		}
		bufs, heard := g.queue, g.heard
		g.queue, g.heard = nil, nil
		closed := g.closed
		g.mu.Unlock()
		if len(bufs) == 0 && closed {
			return
		}
		err := a.write(bufs)
		for _, h := range heard {
			h <- err
		}
	}
}

func (g *groupFile) close() {
	g.mu.Lock()
	g.closed = true
	g.more.Signal()
	g.mu.Unlock()
	<-g.done
}
