package boltstore

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// setDiskFull makes the log find no room while full() is true, for the
// rest of the test.
func setDiskFull(t *testing.T, full func() bool) {
	t.Helper()
	diskFull = full
	t.Cleanup(func() { diskFull = nil })
}

// TestFullDiskNewEpochKeepsEarlyEpochWhole: on a full disk, a removal that
// would begin an epoch is refused room in the log and commits synced
// instead. The epoch it could not begin must not take the place of the
// last early epoch, which is still the newest in the log and which recovery
// reads up to its kindMark frame: the removed content's range in it stays
// until a later base frame is on disk. A process killed then opens with
// every acknowledged write and nothing damaged.
func TestFullDiskNewEpochKeepsEarlyEpochWhole(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	gone := appendMsg(t, s, "1001", um.Inbox, randomBytes(100000)) // an early epoch's
	keep := randomBytes(90000)
	kept := appendMsg(t, s, "1001", um.Inbox, keep)
	newMailbox(t, s, "1002") // a synced write: the epoch ends, with its kindMark frame
	full := true
	setDiskFull(t, func() bool { return full })
	if err := s.Remove(ctx, "1001", []uuid.UUID{gone.ID}); err != nil {
		t.Fatalf("Remove on a full disk = %v, want it committed synced", err)
	}
	full = false
	r := openAt(t, copyDir(t, s.dir)) // killed now
	if _, err := r.Folders(ctx, "1002"); err != nil {
		t.Errorf("the acknowledged mailbox 1002: Folders = %v", err)
	}
	if _, err := r.Get(ctx, "1001", gone.ID); err == nil {
		t.Errorf("the acknowledged Remove is undone")
	}
	if got := readAll(t, r, "1001", kept.ID); !bytes.Equal(got, keep) {
		t.Errorf("the kept content is %d bytes and differs, want %d", len(got), len(keep))
	}
	if rep := mustCheck(t, r); len(rep.Problems) != 0 {
		t.Errorf("Check() = %v, want no problems", rep.Problems)
	}
}

// TestFullDiskBatchGivesBackItsLanes: a batch of deposits that needs a new
// lane and finds no room fails with nothing written, and the epoch goes on
// as it was: the lane, whose first frame (naming the epoch's base) was not
// written, is not the epoch's, so the next batch that takes one writes that
// frame first. Every deposit acknowledged after the disk has room again
// survives a kill.
func TestFullDiskBatchGivesBackItsLanes(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	appendMsg(t, s, "1001", um.Inbox, randomBytes(20000)) // an epoch of one lane
	type result struct {
		m   um.Message
		err error
	}
	deposit := func() chan result {
		ch := make(chan result, 1)
		go func() {
			m, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox, AudioType: "audio/wav"}, bytes.NewReader(randomBytes(20000)))
			ch <- result{m, err}
		}()
		return ch
	}
	// batch runs one deposit and, while the committer is held in its
	// commit, queues two more, which then go in one batch of two lanes.
	batch := func() []result {
		hold, entered := make(chan struct{}), make(chan struct{})
		var once sync.Once
		beforeCommit = func(*bolt.Tx) { once.Do(func() { close(entered); <-hold }) }
		first := deposit()
		<-entered
		beforeCommit = nil
		second, third := deposit(), deposit()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			s.c.mu.Lock()
			n := len(s.c.queue)
			s.c.mu.Unlock()
			if n == 2 || time.Now().After(deadline) {
				break
			}
		}
		close(hold)
		return []result{<-first, <-second, <-third}
	}
	full := true
	setDiskFull(t, func() bool { return full })
	refused := batch()
	full = false
	after := batch()
	var want []um.Message
	for _, r := range after {
		if r.err != nil {
			t.Fatalf("deposit with room on the disk = %v", r.err)
		}
		want = append(want, r.m)
	}
	for _, r := range refused[1:] {
		if r.err == nil {
			t.Errorf("deposit in a batch that found no room = nil error, want it refused")
		}
	}
	k := openAt(t, copyDir(t, s.dir)) // killed now
	for _, m := range want {
		if _, err := k.Get(ctx, "1001", m.ID); err != nil {
			t.Errorf("acknowledged deposit UID %d after a kill: %v", m.UID, err)
		}
	}
	if rep := mustCheck(t, k); len(rep.Problems) != 0 {
		t.Errorf("Check() = %v, want no problems", rep.Problems)
	}
}
