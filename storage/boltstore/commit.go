package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/embeddedum/um"
	bolt "go.etcd.io/bbolt"
)

// committer runs the write transactions of all goroutines on one goroutine,
// putting every write that arrived while the previous batch ran into the
// next transaction: commits are shared, with no added delay when there is
// no other work (bbolt's own Batch waits for a timer).
//
// Writes the log can hold (deposits, and the logWrites of logged.go) are
// written as frames to the epoch's segments, applied in a transaction
// committed without syncing, and synced in the background (bgSync) while
// the next batch runs; the package documentation says why that is safe.
// The other writes commit with bbolt's two fdatasyncs and end the epoch.
type committer struct {
	db   *bolt.DB
	dir  string   // the store's
	dbf  *os.File // um.db, read for the meta page of an epoch's base
	logf func(string, ...any)
	wake chan struct{} // buffered 1: a send never blocks
	done chan struct{} // closed when run returns

	mu     sync.Mutex
	queue  []*txOp
	closed bool

	// Owned by the goroutine that runs commits.
	txid      uint64 // of the last commit
	baseTxid  uint64 // of the current epoch's base
	pending   uint64
	broken    error // set when the database fell behind the log
	ep        epoch
	nextSeq   uint64     // number of the next segment to create
	ready     []readySeg // segments created ahead, durable and empty
	depStreak int        // batches in a row that held deposits only

	bg      bgSync  // the fdatasyncs of batches applied before them
	applied []*txOp // the ops of the last early runTx that committed

	flushing atomic.Bool    // a preflush runs
	flushed  sync.WaitGroup // the preflush goroutine

	// freed holds the ranges of log segments that committed removals left
	// unnamed, kept while a replay could read a frame in them and until
	// the removal is durable. release frees them (Store.deleteBlobs).
	freed   []gone
	release func([]gone)
	// endedEarly holds the segments of the last early epoch while it is
	// the newest in the log: recovery reads it up to its kindMark frame,
	// so none of its ranges may be freed before a later base frame is on
	// disk.
	endedEarly []uint64
	// segs counts the contents in this process's segments, so that one
	// no content is in any more is deleted (spent.go).
	segs *liveSegs
}

// epoch is the log's current segments: lanes[0] starts with the base, the
// others, taken when a batch first needs them, with a lane frame. lanes is
// empty between epochs.
type epoch struct {
	lanes   []lane
	entries int
	pin     *bolt.Tx // a read transaction on the base, so bbolt reuses none of its pages
	// early says the epoch applies logWrites before their frames are
	// synced; its kindEarly frame says so to recovery, with horizon, the
	// highest txid such a commit may take.
	early   bool
	horizon uint64
	// preflushed says um.db's pages were flushed once this epoch
	// (committer.preflush).
	preflushed bool
}

type lane struct {
	f     *os.File
	seq   uint64
	off   int64
	alloc int64 // the segment's blocks are allocated up to here (writeLanes)
}

func (e *epoch) open() bool { return len(e.lanes) > 0 }

// full reports whether a segment of the epoch passed segLimit.
func (e *epoch) full() bool {
	for _, l := range e.lanes {
		if l.off >= segLimit {
			return true
		}
	}
	return false
}

type readySeg struct {
	seq uint64
	f   *os.File
}

type txOp struct {
	fn  func(*bolt.Tx) error
	dep *deposit   // a deposit, which goes through the log
	lw  logWrite   // another write the log can hold
	err chan error // buffered 1
	// durable, when not nil, gets the outcome of making the op durable,
	// after err got nil. Only a logWrite's can come later than err's: it
	// is applied before its frame is synced (logged's early path).
	durable chan error
	// released, when not nil, returns the contents fn left unnamed once
	// it committed (a logWrite's come from releasedBy).
	released func() []gone
}

// releases returns the contents op left unnamed; the committer keeps the
// ranges of log segments among them (freed), the caller deletes files.
func (op *txOp) releases() []gone {
	if op.released != nil {
		return op.released()
	}
	return releasedBy(op.lw)
}

// viaLog reports whether op can go through the log.
func (op *txOp) viaLog() bool { return op.dep != nil || op.lw != nil }

// beforeCommit, when a test sets it, runs in every write transaction whose
// operations all succeeded, right before bbolt commits it, so the test can
// tell what was synced before the commit.
var beforeCommit func(tx *bolt.Tx)

// diskFull, when a test sets it, makes writeLanes find no room for a
// batch while it returns true, as a full disk would.
var diskFull func() bool

// replayed, when a test sets it, runs after each transaction a replay
// applies again (n counts them); an error stops the replay there.
var replayed func(n int) error

// errRedo aborts a batch whose transaction one fn failed.
var errRedo = errors.New("boltstore: redo batch")

func newCommitter(db *bolt.DB, dir string, dbf *os.File, nextSeq uint64, logf func(string, ...any)) *committer {
	c := &committer{db: db, dir: dir, dbf: dbf, logf: logf, nextSeq: nextSeq, segs: newLiveSegs(nextSeq), wake: make(chan struct{}, 1), done: make(chan struct{})}
	db.View(func(tx *bolt.Tx) error {
		c.txid = uint64(tx.ID())
		return nil
	})
	return c
}

func (c *committer) start() { go c.run() }

// do runs fn in a write transaction and returns its error or the commit's.
// When ctx is done before fn has started, do returns ctx.Err() and fn never
// runs; once it has started, do waits for the commit, which is short.
func (c *committer) do(ctx context.Context, fn func(*bolt.Tx) error) error {
	return c.submit(ctx, &txOp{fn: fn, err: make(chan error, 1)})
}

// deposit logs and applies d; on success d.stored is the message.
// deposit runs d through the committer. When ctx carries a um.Durability
// it returns once d is applied, as updateLogged does for other writes.
func (c *committer) deposit(ctx context.Context, d *deposit) error {
	op := &txOp{fn: d.apply, dep: d, err: make(chan error, 1)}
	du := um.DurabilityFrom(ctx)
	if du != nil {
		op.durable = make(chan error, 1)
	}
	if err := c.submit(ctx, op); err != nil {
		return err
	}
	if du != nil {
		du.Defer(func(ctx context.Context) error { return op.waitDurable(ctx, nil) })
	}
	return nil
}

// waitDurable waits for an applied op that left its durability to a
// um.Durability, then runs then, if not nil, once it is durable.
func (op *txOp) waitDurable(ctx context.Context, then func()) error {
	select {
	case err := <-op.durable:
		if err == nil && then != nil {
			then()
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *committer) submit(ctx context.Context, op *txOp) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return um.ErrClosed
	}
	c.queue = append(c.queue, op)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	select {
	case err := <-op.err:
		return err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if i := slices.Index(c.queue, op); i >= 0 {
		c.queue = slices.Delete(c.queue, i, i+1)
		c.mu.Unlock()
		return ctx.Err()
	}
	c.mu.Unlock()
	return <-op.err
}

func (c *committer) run() {
	defer close(c.done)
	for {
		<-c.wake
		for {
			c.mu.Lock()
			ops, closed := c.queue, c.closed
			c.queue = nil
			c.mu.Unlock()
			if len(ops) == 0 {
				if closed {
					if err := c.checkpoint(); err != nil {
						c.logf("boltstore: checkpoint at close: %v", err)
					}
					c.endEpoch() // bbolt's Close waits for the pin
					c.bg.drain()
					c.flushed.Wait()
					c.dropReady()
					return
				}
				break
			}
			c.commit(ops)
		}
	}
}

// commit runs ops: runs of deposits through the log, the others in synced
// transactions, except where a synced commit is cheaper. A deposit whose
// content is kept in the database (a small one) needs no frame when it is
// in a synced transaction, so:
//   - a batch that holds other writes commits synced anyway, and its small
//     deposits join that transaction; only large deposits, whose content
//     lives in a segment, still go through the log first;
//   - a lone small deposit between other writes (no epoch open, and the
//     batch before was not deposits only) commits synced too: logging it
//     would begin an epoch (a segment, a base frame, a pinned read
//     transaction) for one frame, and the next other write would end it.
//
// The ops of a batch are concurrent (each caller waits for its own), so
// any order of them is one the callers could have seen.
func (c *committer) commit(ops []*txOp) {
	if err := c.bg.failed(); err != nil && c.broken == nil {
		c.broken = fmt.Errorf("%w: %v", errLogBroken, err)
	}
	var big, small, other, lws []*txOp
	for _, op := range ops {
		switch {
		case op.lw != nil:
			lws = append(lws, op)
		case op.dep == nil:
			other = append(other, op)
		case op.dep.rec.inline:
			small = append(small, op)
		default:
			big = append(big, op)
		}
	}
	streak := c.depStreak
	if len(other) == 0 {
		c.depStreak++
	} else {
		c.depStreak = 0
	}
	lone := len(big) == 0 && len(small) == 1 && len(other) == 0 && len(lws) == 0 && !c.ep.open() && streak == 0
	if len(other) == 0 && !lone {
		c.inOrder(ops)
		return
	}
	c.inOrder(big)
	// Writes the log could hold join the synced commit that happens anyway.
	rest := append(append(small, other...), lws...)
	if len(small) > 0 && c.ep.open() && !c.roomy(rest) {
		// The deposits' pages could make bbolt grow its map, which waits
		// for the epoch's pin.
		if err := c.checkpoint(); err != nil {
			fail(rest, err)
			return
		}
	}
	c.synced(rest)
}

// inOrder runs ops in arrival order: runs of deposits through the log, the
// others in synced transactions.
func (c *committer) inOrder(ops []*txOp) {
	for len(ops) > 0 {
		n := 1
		for n < len(ops) && ops[n].viaLog() == ops[0].viaLog() && (!ops[0].viaLog() || n < chunkLimit) {
			n++
		}
		if ops[0].viaLog() {
			c.logged(ops[:n])
		} else {
			c.synced(ops[:n])
		}
		ops = ops[n:]
	}
}

// synced commits ops with bbolt's two fdatasyncs. That makes the state
// durable whole, and its txid is above every txid the log claims, so
// recovery trusts um.db from then on: the epoch ends.
func (c *committer) synced(ops []*txOp) {
	if c.broken != nil {
		fail(ops, c.broken)
		return
	}
	marked, err := c.markSynced()
	if err != nil {
		fail(ops, err)
		return
	}
	committed, err := c.runTx(ops, false, marked, false)
	if err != nil && marked {
		c.broken = fmt.Errorf("%w: %v", errLogBroken, err)
	}
	if committed && err == nil {
		c.endEpoch()
	}
}

// markSynced, in an epoch with early commits, logs that the next commit
// (txid c.txid+1) is a synced one, before it is made: a commit of the
// epoch's may be on disk without its frame (early commits apply before
// their sync), so recovery distrusts every txid up to the epoch's horizon
// unless this frame vouches for the one um.db holds. marked says the
// caller must make that commit (runTx's always), even with no op left:
// otherwise an early commit could take the txid the frame vouches for.
// A failure breaks the committer: the frame may be on disk.
func (c *committer) markSynced() (marked bool, err error) {
	e := &c.ep
	if !e.open() || !e.early {
		return false, nil
	}
	f := newFrame(binary.BigEndian.AppendUint64([]byte{kindMark}, c.txid+1), 0)
	l := &e.lanes[0]
	if err := writeAt(l.f, [][]byte{f}, l.off); err != nil {
		c.broken = fmt.Errorf("%w: %v", errLogBroken, err)
		return false, c.broken
	}
	l.off += int64(len(f))
	if err := fdatasync(l.f); err != nil {
		c.broken = fmt.Errorf("%w: %v", errLogBroken, err)
		return false, c.broken
	}
	return true, nil
}

// logged writes the frames of ops (deposits and other writes the log can
// hold) and applies them in one transaction, committed without a sync when
// the epoch's base is pinned (roomy); the frames' fdatasync then runs in
// the background (bgSync) while the committer goes on with the next batch.
// An op whose caller left its durability to a um.Durability is answered as
// soon as it is applied, the others once their frames are synced. A killed
// process keeps what was applied, which is in the files; a power loss may
// take it, with everything logged after it, but none of it was
// acknowledged to anyone outside the process before its sync. Without
// room to pin the base, the frames are synced first and the commit too.
func (c *committer) logged(ops []*txOp) {
	if c.broken != nil {
		fail(ops, c.broken)
		return
	}
	e := &c.ep
	if e.open() && (e.entries+len(ops) > epochLimit || e.full()) {
		if err := c.checkpoint(); err != nil {
			fail(ops, err)
			return
		}
	}
	roomy := c.roomy(ops)
	if !roomy {
		// No room to keep the base pinned: the other writes commit synced,
		// as they can, and only deposits, whose contents must land in a
		// segment, are logged (and committed synced too).
		var lws []*txOp
		ops, lws = splitLogWrites(ops)
		if len(lws) > 0 {
			c.synced(lws)
		}
		if len(ops) == 0 {
			return
		}
	}
	if !roomy && e.open() {
		if err := c.checkpoint(); err != nil {
			fail(ops, err)
			return
		}
	}
	deps, early := 0, roomy
	for _, op := range ops {
		if op.dep != nil {
			deps++
		}
	}
	if early && e.open() && e.early && c.txid+1 > e.horizon {
		if err := c.checkpoint(); err != nil {
			fail(ops, err)
			return
		}
	}
	nl := max(1, min(deps, maxLanes))
	bufs := make([][][]byte, nl) // each lane's, written in one system call where there is one
	fresh := !e.open()
	// undo takes back what this batch did to the epoch when it fails with
	// nothing written: the epoch it began, the lanes it took (whose first
	// frame, naming the base, is not on disk: a later batch would write to
	// them headless) and its claim of early commits (whose kindEarly frame
	// is not on disk, nor, for a new epoch, its base, whose place in
	// endedEarly the previous early epoch keeps).
	prevLanes, prevEarly, prevHorizon := len(e.lanes), e.early, e.horizon
	undo := func() {
		back := make([]readySeg, 0, len(e.lanes)-prevLanes+len(c.ready))
		for _, l := range e.lanes[prevLanes:] {
			back = append(back, readySeg{l.seq, l.f})
		}
		c.ready = append(back, c.ready...) // still in order: taken from the front
		e.lanes = e.lanes[:prevLanes]
		e.early, e.horizon = prevEarly, prevHorizon
		if fresh {
			if e.pin != nil {
				e.pin.Rollback()
			}
			c.ep = epoch{}
		}
	}
	if fresh {
		base, err := c.beginEpoch(roomy)
		if err != nil {
			undo()
			fail(ops, fmt.Errorf("boltstore: start log segment: %w", err))
			return
		}
		bufs[0] = append(bufs[0], base)
	}
	for i := len(e.lanes); i < nl; i++ {
		head, err := c.addLane()
		if err != nil {
			undo()
			fail(ops, fmt.Errorf("boltstore: start log segment: %w", err))
			return
		}
		bufs[i] = append(bufs[i], head)
	}
	txid, kind := c.txid+1, byte(kindDeposit)
	if !roomy {
		kind = kindDepositSynced
	}
	// The first early batch of an epoch is synced before it is applied,
	// with the base frame when it is new and the kindEarly frame: those
	// must be on disk before any commit they cover.
	flush := !early
	if early && !e.early {
		e.early, e.horizon, flush = true, txid+epochLimit, true
		h := binary.BigEndian.AppendUint64([]byte{kindEarly}, txid)
		bufs[0] = append(bufs[0], newFrame(binary.BigEndian.AppendUint64(h, e.horizon), 0))
	}
	ends := make([]int64, nl)
	for i := range nl {
		ends[i] = e.lanes[i].off + lenAll(bufs[i])
	}
	dj := 0
	for j, op := range ops {
		if op.lw != nil {
			h := logWriteHead(txid, len(ops), j, op.lw)
			ends[0] += int64(len(h))
			bufs[0] = append(bufs[0], h)
			continue
		}
		d, i := op.dep, dj%nl
		dj++
		h := depositHead(kind, txid, len(ops), j, d)
		d.loc = segLoc{seq: e.lanes[i].seq, off: ends[i] + int64(len(h)), size: d.data.size()}
		ends[i] = d.loc.off + d.loc.size
		bufs[i] = append(append(bufs[i], h), d.data...)
	}
	err := c.writeLanes(bufs, flush)
	if nr := (*noRoomError)(nil); errors.As(err, &nr) {
		// Nothing was written: the epoch goes on as it was before this
		// batch, or, when this batch began it, is not begun. The other
		// writes can still commit synced: a full disk must not keep a
		// removal from freeing space.
		undo()
		deps, lws := splitLogWrites(ops)
		fail(deps, fmt.Errorf("boltstore: write log: %w", err))
		if len(lws) > 0 {
			c.synced(lws)
		}
		return
	}
	if err != nil {
		// Not acknowledged, yet the frames may have reached the disk: use
		// the txid they claim, then end the epoch with a synced commit
		// above it, so recovery never applies them. An early epoch's
		// horizon is above it too: reopening replays.
		err = fmt.Errorf("boltstore: write log: %w", err)
		if e.early {
			c.broken = fmt.Errorf("%w: %v", errLogBroken, err)
		} else if _, cerr := c.runTx(nil, false, true, false); cerr != nil {
			c.broken = fmt.Errorf("%w: %v", errLogBroken, cerr)
		} else {
			c.checkpoint()
		}
		fail(ops, err)
		return
	}
	for i := range nl {
		e.lanes[i].off = ends[i]
	}
	if fresh {
		// This epoch's base frame is on disk (the first batch of an epoch
		// is always synced): it is the newest, and recovery reads no older
		// segment.
		c.endedEarly = nil
		c.deleteSpent()
	}
	e.entries += len(ops)
	early = early && !flush
	c.applied = c.applied[:0]
	if _, err := c.runTx(ops, roomy, true, early); err != nil {
		// The log holds writes the database lacks, and later txids
		// would not match the log's: stop writing until a reopen replays.
		c.broken = fmt.Errorf("%w: %v", errLogBroken, err)
		return
	}
	if early && !e.preflushed && e.entries >= epochLimit/2 {
		e.preflushed = true
		c.preflush()
	}
	if early {
		files := make([]*os.File, nl)
		for i := range nl {
			files[i] = e.lanes[i].f
		}
		c.mu.Lock()
		idle := len(c.queue) == 0
		c.mu.Unlock()
		if idle && !c.bg.busy() && blockedOnSync(c.applied) {
			// Nothing else to apply meanwhile, and a caller waits for this
			// sync: sync here, sparing the hand-off to bgSync's goroutine
			// and back. Callers that left their durability to a
			// um.Durability were answered already and wait later, if at
			// all, so the sync goes to bgSync and the committer stays free
			// for the write that comes next.
			err := syncAll(files)
			if err != nil {
				c.broken = fmt.Errorf("%w: %v", errLogBroken, err)
			}
			hearSynced(c.applied, err)
		} else {
			c.bg.add(files, c.applied)
		}
	} else {
		c.releaseDurable()
	}
	if !roomy {
		c.endEpoch()
	}
}

// blockedOnSync reports whether a caller of ops waits, blocked, for their
// sync: one that did not leave it to a um.Durability.
func blockedOnSync(ops []*txOp) bool {
	for _, op := range ops {
		if op.durable == nil {
			return true
		}
	}
	return false
}

// splitLogWrites returns the deposits of ops and, apart, the logWrites.
func splitLogWrites(ops []*txOp) (deps, lws []*txOp) {
	for _, op := range ops {
		if op.lw != nil {
			lws = append(lws, op)
		} else {
			deps = append(deps, op)
		}
	}
	return deps, lws
}

// logWriteHead returns the frame of w, number idx of the n writes of
// transaction txid.
func logWriteHead(txid uint64, n, idx int, w logWrite) []byte {
	h := []byte{w.kind()}
	h = binary.BigEndian.AppendUint64(h, txid)
	h = binary.AppendUvarint(h, uint64(n))
	h = binary.AppendUvarint(h, uint64(idx))
	return newFrame(w.body(h), 0)
}

// reply answers ops with err; with durable, those that wait for their
// durability hear it too.
func reply(ops []*txOp, err error, durable bool) {
	for _, op := range ops {
		op.err <- err
		if durable && err == nil && op.durable != nil {
			op.durable <- nil
		}
	}
}

func fail(ops []*txOp, err error) { reply(ops, err, false) }

// roomy reports whether bbolt's memory map surely has room for ops and a
// checkpoint without growing: growing waits for every read transaction to
// end, the epoch's pin too, which the committer itself would release.
func (c *committer) roomy(ops []*txOp) bool {
	var hw int64
	c.db.View(func(tx *bolt.Tx) error {
		hw = tx.Size()
		c.txid = uint64(tx.ID()) // the committer is the only writer, but tests write behind it
		return nil
	})
	need := reserve(hw)
	for _, op := range ops {
		switch {
		case op.dep != nil:
			need += opNeed(op.dep)
		case op.lw != nil:
			need += op.lw.need()
		}
	}
	return hw+need <= mmapFloor(max(hw, initialMmap))
}

// beginEpoch takes a fresh segment and returns the base frame to write
// first: the current (synced) state's txid and meta page. With pin it keeps
// a read transaction on that state, so that no commit of the epoch
// overwrites its pages and recovery can go back to it.
func (c *committer) beginEpoch(pin bool) ([]byte, error) {
	meta, err := c.baseMeta()
	if err != nil {
		return nil, err
	}
	if len(c.ready) == 0 {
		if err := c.makeSegments(); err != nil {
			return nil, err
		}
	}
	r := c.ready[0]
	c.ready = c.ready[1:]
	c.ep = epoch{lanes: []lane{{f: r.f, seq: r.seq}}}
	if pin {
		tx, err := c.db.Begin(false)
		if err != nil {
			return nil, err
		}
		c.ep.pin = tx
	}
	c.baseTxid = c.txid
	head := []byte{kindBase}
	head = binary.BigEndian.AppendUint64(head, c.txid)
	head = binary.BigEndian.AppendUint64(head, r.seq)
	head = append(head, meta...)
	return newFrame(head, 0), nil
}

// addLane takes another fresh segment for the epoch and returns its lane
// frame, which names the base.
func (c *committer) addLane() ([]byte, error) {
	if len(c.ready) == 0 {
		if err := c.makeSegments(); err != nil {
			return nil, err
		}
	}
	r := c.ready[0]
	c.ready = c.ready[1:]
	base := c.ep.lanes[0].seq
	c.ep.lanes = append(c.ep.lanes, lane{f: r.f, seq: r.seq})
	head := []byte{kindLane}
	head = binary.BigEndian.AppendUint64(head, c.baseTxid)
	head = binary.BigEndian.AppendUint64(head, base)
	head = binary.BigEndian.AppendUint64(head, uint64(len(c.ep.lanes)-1))
	return newFrame(head, 0), nil
}

// writeLanes writes each lane's buffers to its segment and, with flush,
// fdatasyncs it, the lanes in parallel.
//
// Before it writes anything it allocates the blocks the frames and a
// kindMark frame after them will take: on a full disk the batch then fails
// with nothing written (a noRoomError), and a synced commit can still be
// marked (markSynced) to end the epoch, so a removal can free space.
func (c *committer) writeLanes(bufs [][][]byte, flush bool) error {
	for i := range bufs {
		l := &c.ep.lanes[i]
		need := l.off + markRoom + lenAll(bufs[i])
		if need > l.alloc {
			end := need + allocAhead
			err := error(nil)
			if diskFull != nil && diskFull() {
				err = &os.PathError{Op: "fallocate", Path: l.f.Name(), Err: syscall.ENOSPC}
			} else {
				err = allocate(l.f, l.alloc, end-l.alloc)
			}
			if err != nil {
				return &noRoomError{err}
			}
			l.alloc = end
		}
	}
	one := func(i int) error {
		l := c.ep.lanes[i]
		if err := writeAt(l.f, bufs[i], l.off); err != nil {
			return err
		}
		if !flush {
			startWriteback(l.f, l.off, lenAll(bufs[i]))
			return nil
		}
		return fdatasync(l.f)
	}
	return parallel(len(bufs), one)
}

// lenAll is the number of bytes in bufs.
func lenAll(bufs [][]byte) int64 {
	var n int64
	for _, b := range bufs {
		n += int64(len(b))
	}
	return n
}

// markRoom is the room writeLanes keeps for a kindMark frame, and
// allocAhead what it allocates beyond what a batch needs, so that most
// batches make no allocation call.
const (
	markRoom   = frameHead + 1 + 8
	allocAhead = 256 << 10
)

// noRoomError is a batch refused before any of its frames was written.
type noRoomError struct{ err error }

func (e *noRoomError) Error() string { return "no room in the log: " + e.err.Error() }
func (e *noRoomError) Unwrap() error { return e.err }

// baseMeta reads the meta page of the last commit from um.db.
func (c *committer) baseMeta() ([]byte, error) {
	ps := c.db.Info().PageSize
	b := make([]byte, metaCopy)
	if _, err := c.dbf.ReadAt(b, int64(c.txid%2)*int64(ps)); err != nil {
		return nil, err
	}
	if txid, _, ok := parseMeta(b); !ok || txid != c.txid {
		return nil, fmt.Errorf("%w: meta page %d does not hold txid %d", ErrCorrupt, c.txid%2, c.txid)
	}
	return b, nil
}

// makeSegments creates segBatch empty segments with one directory fsync.
func (c *committer) makeSegments() error {
	var made []readySeg
	for range segBatch {
		f, err := os.OpenFile(segPath(c.dir, c.nextSeq), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			for _, r := range made {
				r.f.Close()
				os.Remove(r.f.Name())
			}
			return err
		}
		made = append(made, readySeg{c.nextSeq, f})
		c.nextSeq++
	}
	if err := syncDir(filepath.Join(c.dir, logDir)); err != nil {
		for _, r := range made {
			r.f.Close()
			os.Remove(r.f.Name())
		}
		return err
	}
	c.ready = append(c.ready, made...)
	return nil
}

// dropReady deletes the segments made ahead and never used.
func (c *committer) dropReady() {
	for _, r := range c.ready {
		r.f.Close()
		os.Remove(r.f.Name())
	}
	c.ready = nil
}

// checkpoint ends the epoch with a synced commit whose txid is above every
// txid the epoch's frames claim.
func (c *committer) checkpoint() error {
	if !c.ep.open() {
		return nil
	}
	if _, err := c.markSynced(); err != nil {
		return err
	}
	if _, err := c.runTx(nil, false, true, false); err != nil {
		c.broken = fmt.Errorf("%w: %v", errLogBroken, err)
		return c.broken
	}
	c.endEpoch()
	return nil
}

// preflush writes out the pages that an early epoch's commits left in the
// page cache, on a goroutine of its own, half-way through the epoch. The
// checkpoint that ends the epoch commits synced and so flushed them all
// while every writer waited (6 ms on average under imaptest's load); now
// it flushes those of the epoch's second half. It promises nothing, so a
// failure is left for the checkpoint's own sync to report, and it skips
// the fdatasync variable that tests record. Ignoring the error loses no
// report: dbf is an open file of its own, not bbolt's, and Linux reports a
// writeback error to every file open on um.db at its next fsync, so
// bbolt's synced commit still fails though this flush saw the error first.
func (c *committer) preflush() {
	if !c.flushing.CompareAndSwap(false, true) {
		return
	}
	c.flushed.Add(1)
	go func() {
		defer c.flushed.Done()
		defer c.flushing.Store(false)
		flushData(c.dbf)
	}()
}

// endEpoch ends the open epoch once whatever it applied is durable: a
// synced commit came just before, or the epoch applied nothing. So a
// checkpoint need not wait for the sync of the epoch's last batch, which
// may still run (bgSync); the segments are closed when it ends.
func (c *committer) endEpoch() {
	if c.ep.pin != nil {
		c.ep.pin.Rollback()
	}
	if c.ep.early {
		c.endedEarly = c.endedEarly[:0]
		for _, l := range c.ep.lanes {
			c.endedEarly = append(c.endedEarly, l.seq)
		}
	}
	files := make([]*os.File, len(c.ep.lanes))
	for i, l := range c.ep.lanes {
		files[i] = l.f
		if c.broken == nil {
			c.segs.ended(l.seq)
		}
	}
	c.bg.retire(files)
	c.ep = epoch{}
	c.releaseDurable()
}

// releaseDurable frees the ranges that durable removals left unnamed,
// except those of the open epoch's segments, which wait for its end, and
// of the last early epoch's while it is the newest. Call it only when
// every removal in freed is durable.
func (c *committer) releaseDurable() {
	if c.broken != nil || len(c.freed) == 0 || c.release == nil {
		return
	}
	var now, later []gone
	for _, g := range c.freed {
		if g.seg != nil && (c.ep.holds(g.seg.seq) || slices.Contains(c.endedEarly, g.seg.seq)) {
			later = append(later, g)
		} else {
			now = append(now, g)
		}
	}
	c.freed = later
	if len(now) > 0 {
		c.release(now)
	}
}

// holds reports whether segment seq is one of the epoch's.
func (e *epoch) holds(seq uint64) bool {
	for _, l := range e.lanes {
		if l.seq == seq {
			return true
		}
	}
	return false
}

// runTx runs ops in one transaction, committed with bbolt's fdatasyncs
// unless noSync. With early, the ops are answered once applied and their
// durability is left to the caller. When one op fails, the transaction is rolled back, that op
// gets its error, and the others run again without it: each op sees exactly
// the state of the ops committed before it. With always, the transaction
// commits even when no op is left, so that it takes the txid the log
// claimed for it. committed says whether a commit was attempted.
func (c *committer) runTx(ops []*txOp, noSync, always, early bool) (committed bool, err error) {
	for {
		if len(ops) == 0 && !always {
			return false, nil
		}
		failed, ferr := -1, error(nil)
		err := c.db.Update(func(tx *bolt.Tx) error {
			// Set under bbolt's writer lock, which orders it with every
			// commit that reads it.
			tx.DB().NoSync = noSync
			for i, op := range ops {
				if err := op.fn(tx); err != nil {
					failed, ferr = i, err
					return errRedo
				}
			}
			if beforeCommit != nil {
				beforeCommit(tx)
			}
			c.pending = uint64(tx.ID())
			return nil
		})
		if failed >= 0 {
			ops[failed].err <- ferr
			ops = slices.Delete(ops, failed, failed+1)
			continue
		}
		if err != nil {
			err = &commitError{err}
		} else {
			c.txid = c.pending
			for _, op := range ops {
				if op.dep != nil && !op.dep.rec.inline {
					c.segs.added(op.dep.loc.seq)
				}
				for _, g := range op.releases() {
					if g.seg != nil { // content files are the caller's
						c.freed = append(c.freed, g)
					}
				}
			}
		}
		if early && err == nil {
			// Those that left their durability to a um.Durability hear
			// now; the others once bgSync has synced their frames.
			for _, op := range ops {
				if op.durable != nil {
					op.err <- nil
				}
			}
			c.applied = append(c.applied, ops...)
		} else {
			reply(ops, err, true)
		}
		return true, err
	}
}

// replay applies the frames recovery returned, each txid's in one
// unsynced transaction as when they were first applied, with the base
// pinned, then checkpoints. A crash on the way leaves the same log and the
// same base, so replay starts over.
func (c *committer) replay(rc *recovery) error {
	if !rc.restored {
		return nil
	}
	pin, err := c.db.Begin(false)
	if err != nil {
		return err
	}
	c.ep = epoch{pin: pin}
	defer func() {
		pin.Rollback()
		c.ep = epoch{}
	}()
	frames, groups := rc.replay, 0
	for len(frames) > 0 {
		n := 1
		for n < len(frames) && frames[n].txid == frames[0].txid {
			n++
		}
		for c.txid+1 < frames[0].txid {
			if _, err := c.runTx(nil, true, true, false); err != nil {
				return err
			}
		}
		ops := make([]*txOp, n)
		for i, fr := range frames[:n] {
			op, err := replayOp(fr)
			if err != nil {
				return fmt.Errorf("%w: log segment %d at %d: %v", ErrCorrupt, fr.seq, fr.off, err)
			}
			ops[i] = op
		}
		if _, err := c.runTx(ops, true, true, false); err != nil {
			return err
		}
		frames = frames[n:]
		groups++
		if replayed != nil {
			if err := replayed(groups); err != nil {
				return err
			}
		}
	}
	for c.txid < rc.claimed {
		if _, err := c.runTx(nil, true, true, false); err != nil {
			return err
		}
	}
	_, err = c.runTx(nil, false, true, false)
	return err
}

// replayOp returns the write a frame holds, to apply again.
func replayOp(fr frame) (*txOp, error) {
	if fr.kind == kindDeposit || fr.kind == kindDepositSynced {
		d, err := parseDeposit(fr)
		if err != nil {
			return nil, err
		}
		d.loc = segLoc{seq: fr.seq, off: fr.dataOff(), size: d.data.size()}
		return &txOp{fn: d.apply, dep: d, err: make(chan error, 1)}, nil
	}
	d := decoder{b: fr.head[9:]}
	d.uvarint()
	d.uvarint()
	if d.err != nil {
		return nil, d.err
	}
	w, err := parseLogWrite(fr.kind, d.b)
	if err != nil {
		return nil, err
	}
	return &txOp{fn: w.apply, lw: w, err: make(chan error, 1)}, nil
}

// close commits what is queued and stops the committer; later do calls fail
// with um.ErrClosed.
func (c *committer) close() {
	c.mu.Lock()
	already := c.closed
	c.closed = true
	c.mu.Unlock()
	if !already {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	<-c.done
}

// commitError is a failed commit (an I/O error, a full disk). Whether the
// data reached the disk is unknown, so content files it names are kept and
// left to the next sweep.
type commitError struct{ err error }

func (e *commitError) Error() string { return "boltstore: commit: " + e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }
