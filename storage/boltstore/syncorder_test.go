package boltstore

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// syncEvent is one sync the store made, or one of its commits.
type syncEvent struct {
	kind   string    // "fdatasync", "syncdir", "commit" or "ack"
	path   string    // the file synced, or the directory
	names  []string  // syncdir: the entries of the directory just before the sync
	blobs  []blobKey // commit: the contents the committed state references
	segs   []segLoc  // commit: where the contents it references in log segments are
	size   int64     // fdatasync: the file's size when it was synced
	noSync bool      // commit: made without bbolt's fdatasyncs
	id     uuid.UUID // ack: the message whose Append returned
}

// ack records that the Append of message id returned to its caller.
func (r *syncRecorder) ack(id uuid.UUID) { r.add(syncEvent{kind: "ack", id: id}) }

// checkAcksDurable fails unless the content of every message whose ack is
// in events, where it is in a log segment, lay within what an fdatasync of
// that segment made durable before the ack: a caller hears of a deposit
// only once a power loss cannot take it.
func checkAcksDurable(t *testing.T, s *Store, events []syncEvent) {
	t.Helper()
	synced := map[string]int64{}
	acks := 0
	for _, e := range events {
		switch e.kind {
		case "fdatasync":
			synced[e.path] = max(synced[e.path], e.size)
		case "ack":
			acks++
			var l segLoc
			var inSeg bool
			if err := s.view(ctx, func(tx *bolt.Tx) error {
				mb, err := getMailbox(tx, "1001")
				if err != nil {
					return err
				}
				_, r, err := mb.find(e.id)
				if err != nil {
					return err
				}
				l, inSeg, err = segLocOf(tx, r.blob)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if end := l.off + l.size; inSeg && synced[s.segPath(l.seq)] < end {
				t.Errorf("deposit %s acknowledged with segment %d bytes %d-%d synced only to %d", e.id, l.seq, l.off, end, synced[s.segPath(l.seq)])
			}
		}
	}
	if acks == 0 {
		t.Fatal("no deposit acknowledged")
	}
}

// syncRecorder keeps the syncs and commits of the store in their order.
type syncRecorder struct {
	mu     sync.Mutex
	events []syncEvent
}

func (r *syncRecorder) add(e syncEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *syncRecorder) snapshot() []syncEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// recordSyncs wraps the store's fdatasync and directory fsync and hooks its
// commits. Call it before Open, so the goroutines Open starts see the hooks,
// and do not run the test in parallel: the hooks are package variables. They
// are restored after the stores opened later in the test are closed.
func recordSyncs(t *testing.T) *syncRecorder {
	t.Helper()
	rec := &syncRecorder{}
	origData, origDir, origCommit := fdatasync, syncDir, beforeCommit
	t.Cleanup(func() { fdatasync, syncDir, beforeCommit = origData, origDir, origCommit })
	fdatasync = func(f *os.File) error {
		var size int64
		if fi, err := f.Stat(); err == nil {
			size = fi.Size()
		}
		err := origData(f)
		if err == nil {
			rec.add(syncEvent{kind: "fdatasync", path: f.Name(), size: size})
		}
		return err
	}
	syncDir = func(dir string) error {
		// Read before the sync: an entry seen then existed when the
		// directory was synced, so the sync made it durable.
		ents, rerr := os.ReadDir(dir)
		err := origDir(dir)
		if err == nil && rerr == nil {
			names := make([]string, len(ents))
			for i, e := range ents {
				names[i] = e.Name()
			}
			rec.add(syncEvent{kind: "syncdir", path: dir, names: names})
		}
		return err
	}
	beforeCommit = func(tx *bolt.Tx) {
		var blobs []blobKey
		tx.Bucket(bucketBlobs).ForEach(func(k, _ []byte) error {
			var b blobKey
			copy(b[:], k)
			blobs = append(blobs, b)
			return nil
		})
		var segs []segLoc
		tx.Bucket(bucketSeg).ForEach(func(_, v []byte) error {
			l, _ := parseSegLoc(v)
			segs = append(segs, l)
			return nil
		})
		rec.add(syncEvent{kind: "commit", blobs: blobs, segs: segs, noSync: tx.DB().NoSync})
	}
	return rec
}

// contentKey returns the key of message id's content and whether it is
// kept in the database.
func contentKey(t testing.TB, s *Store, mailbox string, id uuid.UUID) (blobKey, bool) {
	t.Helper()
	var r *record
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		_, r, err = mb.find(id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return r.blob, r.inline
}

// checkSyncedBefore fails unless every content in a log segment that
// commit i of events refers to lies within what an fdatasync of its segment
// made durable before the commit: the database never names log bytes that a
// power loss could take. Unsynced commits are checked too: their state is
// what a reader sees and what um.db holds if the process is killed.
func checkSyncedBefore(t *testing.T, s *Store, events []syncEvent, i int) {
	t.Helper()
	synced := map[string]int64{}
	for _, e := range events[:i] {
		if e.kind == "fdatasync" {
			synced[e.path] = max(synced[e.path], e.size)
		}
	}
	for _, l := range events[i].segs {
		if end := l.off + l.size; synced[s.segPath(l.seq)] < end {
			t.Errorf("commit %d names segment %d bytes %d-%d, synced only to %d before it", i, l.seq, l.off, end, synced[s.segPath(l.seq)])
		}
	}
}

// TestDepositSyncOrder checks the order of syncs that makes a deposit
// survive power loss, which killing the process (the page cache survives)
// cannot show: the log segment holding the deposit's frame is fdatasynced,
// and its name made durable by an fsync of log/, before any commit names
// the content and before Append returns; the commit that records the
// message is not synced (the log is the deposit's durability); and a flag
// change goes through the log too: its commit is not synced, and its
// segment is synced before SetFlags returns.
func TestDepositSyncOrder(t *testing.T) {
	rec := recordSyncs(t)
	s := openStore(t)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	start := len(rec.snapshot())
	content := randomBytes(inlineMax + 4096)
	m := appendMsg(t, s, "1001", um.Inbox, content)
	events := rec.snapshot() // what happened before Append returned

	k, inline := contentKey(t, s, "1001", m.ID)
	if inline {
		t.Fatalf("content of %d bytes is kept in the database, want it in the log", len(content))
	}
	commit := slices.IndexFunc(events, func(e syncEvent) bool {
		return e.kind == "commit" && slices.Contains(e.blobs, k)
	})
	if commit < start {
		t.Fatalf("no commit referencing content %x was recorded during Append: %+v", k, events[start:])
	}
	if !events[commit].noSync {
		t.Errorf("the deposit's commit was synced; the log should make it durable")
	}
	checkSyncedBefore(t, s, events, commit)
	var seg string
	for _, l := range events[commit].segs {
		seg = s.segPath(l.seq)
	}
	data := slices.IndexFunc(events, func(e syncEvent) bool { return e.kind == "fdatasync" && e.path == seg })
	if data < start || data > commit {
		t.Errorf("fdatasync of the segment at event %d, commit at %d, Append started at %d: want the sync during Append, first", data, commit, start)
	}
	name := slices.IndexFunc(events, func(e syncEvent) bool {
		return e.kind == "syncdir" && e.path == filepath.Dir(seg) && slices.Contains(e.names, filepath.Base(seg))
	})
	if name < 0 || name > data {
		t.Errorf("fsync of log/ holding the segment at event %d, its fdatasync at %d: want the name durable first", name, data)
	}

	// A flag change is logged too: its commit is not synced, and the log
	// segment is synced after it, before SetFlags returns.
	before := len(rec.snapshot())
	if _, err := s.SetFlags(ctx, "1001", []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}); err != nil {
		t.Fatal(err)
	}
	events = rec.snapshot()
	flags := slices.IndexFunc(events[before:], func(e syncEvent) bool { return e.kind == "commit" })
	if flags < 0 || !events[before+flags].noSync {
		t.Fatalf("the flag change's commit (event %d) was synced; want it through the log", flags)
	}
	if n := segmentSyncs(events, before+flags, len(events)); n == 0 {
		t.Errorf("SetFlags returned with no log segment synced after its commit")
	}
}

// TestEarlyFlagWriteSyncOrder checks the order a um.Durability allows: a
// flag change made with one in its context returns once applied (visible to
// a reader) with its frame written but not yet synced, and the wait the
// Durability holds returns only after an fdatasync of the segment that
// covers the frame. The first such change of an epoch is synced before it
// is applied, with the frame that tells recovery the epoch has early
// commits.
func TestEarlyFlagWriteSyncOrder(t *testing.T) {
	rec, s, m := recordedWithMessage(t)
	var d um.Durability
	dctx := um.WithDurability(ctx, &d)
	set := func(op um.FlagOp) {
		t.Helper()
		if _, err := s.SetFlags(dctx, "1001", []uuid.UUID{m.ID}, op); err != nil {
			t.Fatal(err)
		}
	}
	heard := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}
	unheard := um.FlagOp{Mode: um.FlagsRemove, Flags: um.FlagHeard}

	// The first: synced before its commit, durable on return.
	start := len(rec.snapshot())
	set(heard)
	events := rec.snapshot()
	commit := slices.IndexFunc(events[start:], func(e syncEvent) bool { return e.kind == "commit" })
	if commit < 0 || segmentSyncs(events, start, start+commit) == 0 {
		t.Fatalf("the epoch's first early flag change was applied before any log sync: %+v", events[start:])
	}
	if err := d.Wait(ctx); err != nil {
		t.Fatal(err)
	}

	// Hold the next sync back to see what the caller gets before it.
	entered, release := holdLogSyncs(t)
	before := len(rec.snapshot())
	set(unheard) // returns with its sync held back
	if got, err := s.Get(ctx, "1001", m.ID); err != nil || got.Flags.Has(um.FlagHeard) {
		t.Errorf("an early flag change returned before it was visible: %v, %v", got.Flags, err)
	}
	if !d.Pending() {
		t.Fatalf("an early flag change left nothing to wait for")
	}
	waitPastHeldSync(t, &d, entered, release)
	checkCommitThenSync(t, rec, before, "early flag change")
}

// recordedWithMessage opens a store whose syncs are recorded, with
// mailbox 1001 holding one message.
func recordedWithMessage(t *testing.T) (*syncRecorder, *Store, um.Message) {
	t.Helper()
	rec := recordSyncs(t)
	s := openStore(t)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	return rec, s, appendMsg(t, s, "1001", um.Inbox, randomBytes(1000))
}

// holdLogSyncs holds back every fdatasync of a log segment from now until
// release is called; entered gets a value as each begins.
func holdLogSyncs(t *testing.T) (entered <-chan struct{}, release func()) {
	t.Helper()
	held := make(chan struct{})
	in := make(chan struct{}, 16)
	orig := fdatasync
	fdatasync = func(f *os.File) error {
		if filepath.Base(filepath.Dir(f.Name())) == logDir {
			in <- struct{}{}
			<-held
		}
		return orig(f)
	}
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	t.Cleanup(func() { release(); fdatasync = orig })
	return in, release
}

// waitPastHeldSync checks that d's Wait does not return while the log's
// fdatasync is held back, and does once it is released.
func waitPastHeldSync(t *testing.T, d *um.Durability, entered <-chan struct{}, release func()) {
	t.Helper()
	waited := make(chan error, 1)
	go func() { waited <- d.Wait(ctx) }()
	<-entered
	select {
	case err := <-waited:
		t.Fatalf("Wait returned (%v) while the frame's fdatasync was held back", err)
	default:
	}
	release()
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
}

// checkCommitThenSync checks that the first commit recorded after before
// was unsynced and came before the log's fdatasync.
func checkCommitThenSync(t *testing.T, rec *syncRecorder, before int, what string) {
	t.Helper()
	events := rec.snapshot()
	commit := slices.IndexFunc(events[before:], func(e syncEvent) bool { return e.kind == "commit" })
	sync := slices.IndexFunc(events[before:], func(e syncEvent) bool {
		return e.kind == "fdatasync" && filepath.Base(filepath.Dir(e.path)) == logDir
	})
	if commit < 0 || sync < 0 || sync < commit || !events[before+commit].noSync {
		t.Errorf("%s: commit at %d (noSync %v), log sync at %d; want an unsynced commit, then the sync", what, commit, commit >= 0 && events[before+commit].noSync, sync)
	}
}

// TestConcurrentDepositsShareSync checks group commit: eight depositors at
// once need fewer transactions than deposits, spread their frames over
// several segments (lanes) fdatasynced in parallel, and none hears of its
// deposit before its bytes in the log are synced.
func TestConcurrentDepositsShareSync(t *testing.T) {
	rec := recordSyncs(t)
	s := openStore(t)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	start := len(rec.snapshot())
	const n, each = 8, 10
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				m, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, bytes.NewReader(randomBytes(100<<10)))
				if err != nil {
					t.Error(err)
					continue
				}
				rec.ack(m.ID)
			}
		}()
	}
	wg.Wait()
	events := rec.snapshot()
	commits, segs := 0, map[string]bool{}
	for i, e := range events {
		switch {
		case i < start:
		case e.kind == "fdatasync" && filepath.Base(filepath.Dir(e.path)) == logDir:
			segs[e.path] = true
		case e.kind == "commit":
			commits++
		}
	}
	checkAcksDurable(t, s, events)
	t.Logf("%d deposits, %d transactions, %d segments", n*each, commits, len(segs))
	if commits == 0 || commits >= n*each {
		t.Errorf("%d transactions for %d concurrent deposits, want at least one and fewer than the deposits", commits, n*each)
	}
	if len(segs) < 2 {
		t.Errorf("concurrent deposits went to %d segments, want lanes in parallel", len(segs))
	}
}

// TestEarlyDepositSyncOrder: a deposit made under a um.Durability (an IMAP
// APPEND) returns once it is applied and visible, with its log sync still
// to come, and the Durability's Wait returns only after that sync.
func TestEarlyDepositSyncOrder(t *testing.T) {
	rec, s, m := recordedWithMessage(t)
	var d um.Durability
	dctx := um.WithDurability(ctx, &d)
	// Begin an early epoch, whose first batch is synced before it is
	// applied.
	if _, err := s.SetFlags(dctx, "1001", []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}); err != nil {
		t.Fatal(err)
	}
	if err := d.Wait(ctx); err != nil {
		t.Fatal(err)
	}

	entered, release := holdLogSyncs(t)
	before := len(rec.snapshot())
	content := randomBytes(100 << 10)
	type result struct {
		m   um.Message
		err error
	}
	appended := make(chan result, 1)
	go func() {
		m, err := s.Append(dctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox, Added: time.Now()}, bytes.NewReader(content))
		appended <- result{m, err}
	}()
	var r result
	select {
	case r = <-appended:
	case <-time.After(30 * time.Second):
		release()
		t.Fatal("Append under a Durability waited for its fdatasync")
	}
	got, err := r.m, r.err
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.Get(ctx, "1001", got.ID); err != nil || m.Size != int64(len(content)) {
		t.Errorf("an early deposit returned before it was visible: %+v, %v", m, err)
	}
	if !d.Pending() {
		t.Fatal("a deposit under a Durability left nothing to wait for")
	}
	waitPastHeldSync(t, &d, entered, release)
	checkCommitThenSync(t, rec, before, "early deposit")
	rc, err := s.Open(ctx, "1001", got.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, err := io.ReadAll(rc); err != nil || !bytes.Equal(b, content) {
		t.Errorf("the deposit's content read back: %d bytes, %v; want the %d deposited", len(b), err, len(content))
	}
}
