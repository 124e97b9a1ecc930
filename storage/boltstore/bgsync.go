package boltstore

import (
	"errors"
	"os"
	"slices"
	"sync"
)

// bgSync runs the fdatasyncs of the batches committer.logged applied
// before them, on a goroutine of its own, so that the committer applies the
// next batch while the disk flushes the last. Batches that arrive during a
// sync share the next one: each sync starts after their frames were
// written, so it covers them.
type bgSync struct {
	mu      sync.Mutex
	running bool
	files   []*os.File // the segments the waiting ops' frames are in
	waiting []*txOp
	retired []*os.File    // segments of ended epochs, closed after the next round's sync
	err     error         // the first failed sync, kept for the committer
	idle    chan struct{} // closed when a run ends; nil when none runs
}

// add has ops hear once files, where their frames are, have been synced:
// on their durable channel those that heard of their apply on err, on err
// the others. Files are the open epoch's segments.
func (b *bgSync) add(files []*os.File, ops []*txOp) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, f := range files {
		if !slices.Contains(b.files, f) {
			b.files = append(b.files, f)
		}
	}
	b.waiting = append(b.waiting, ops...)
	if !b.running {
		b.running, b.idle = true, make(chan struct{})
		go b.run()
	}
}

func (b *bgSync) run() {
	for {
		b.mu.Lock()
		// A segment retired before this round gets no frame after it: once
		// this round's sync is done, none of its own is left to run, so it
		// closes then, not only when the load lets a run end.
		ops, files, retired := b.waiting, b.files, b.retired
		b.waiting, b.files, b.retired = nil, nil, nil
		if len(ops) == 0 {
			closeAll(retired) // before idle, so drain finds them closed
			b.running = false
			close(b.idle)
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		err := syncAll(files)
		if err != nil {
			b.mu.Lock()
			if b.err == nil {
				b.err = err
			}
			b.mu.Unlock()
		}
		closeAll(retired)
		hearSynced(ops, err)
	}
}

// hearSynced tells ops, applied before their frames were synced, how the
// sync went: on their durable channel those that heard of their apply on
// err, on err the others.
func hearSynced(ops []*txOp, err error) {
	for _, op := range ops {
		if op.durable != nil {
			op.durable <- err
		} else {
			op.err <- err
		}
	}
}

// busy reports whether a sync runs or waits to.
func (b *bgSync) busy() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running
}

// syncAll fdatasyncs files, in parallel when there are several.
func syncAll(files []*os.File) error {
	return parallel(len(files), func(i int) error { return fdatasync(files[i]) })
}

// parallel runs fn(0) to fn(n-1) at once and returns their errors joined;
// one runs on the caller's goroutine.
func parallel(n int, fn func(i int) error) error {
	if n == 1 {
		return fn(0)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// retire closes the segments of an epoch that ended, once no sync of
// theirs runs or waits to (committer.endEpoch).
func (b *bgSync) retire(files []*os.File) {
	b.mu.Lock()
	if b.running {
		b.retired = append(b.retired, files...)
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	closeAll(files)
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// drain waits until every op added so far has heard.
func (b *bgSync) drain() {
	b.mu.Lock()
	idle := b.idle
	running := b.running
	b.mu.Unlock()
	if running {
		<-idle
	}
}

// failed returns the first sync that failed, if any.
func (b *bgSync) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}
