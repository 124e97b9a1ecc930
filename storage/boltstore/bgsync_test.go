package boltstore

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRetireWaitsForTheSync: an epoch that ends while the background sync
// of its last batch runs does not wait for it (retire returns at once),
// and its segment stays open until that sync is done: the sync succeeds,
// its op hears so, and only then is the file closed.
func TestRetireWaitsForTheSync(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "segment"))
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	orig := fdatasync
	t.Cleanup(func() { fdatasync = orig })
	fdatasync = func(f *os.File) error {
		close(entered)
		<-release
		return orig(f)
	}

	var b bgSync
	op := &txOp{err: make(chan error, 1)}
	b.add([]*os.File{f}, []*txOp{op})
	<-entered
	retired := make(chan struct{})
	go func() {
		b.retire([]*os.File{f})
		close(retired)
	}()
	select {
	case <-retired:
	case <-time.After(10 * time.Second):
		t.Fatal("retire waited for the sync under way")
	}
	if _, err := f.Stat(); err != nil {
		t.Fatalf("the segment was closed while its sync ran: %v", err)
	}

	close(release)
	if err := <-op.err; err != nil {
		t.Fatalf("the op heard %v, want its sync's success", err)
	}
	b.drain()
	if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("after the sync, Stat of the retired segment = %v, want os.ErrClosed", err)
	}
}

// TestRetireWhileIdle: with no sync running, retire closes the segments
// at once.
func TestRetireWhileIdle(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "segment"))
	if err != nil {
		t.Fatal(err)
	}
	var b bgSync
	b.retire([]*os.File{f})
	if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Stat of the retired segment = %v, want os.ErrClosed", err)
	}
}
