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

	"github.com/embeddedum/um"
	bolt "go.etcd.io/bbolt"
)

// committer runs the write transactions of all goroutines on one goroutine,
// putting every fn that arrived while the previous commit was syncing into
// the next transaction. A commit costs two fdatasyncs whatever it holds, so
// under concurrent deposits this shares them, with no added delay when
// there is no other work (bbolt's own Batch waits for a timer).
//
// Deposits (ops with a dep) go through the log instead: the committer
// writes their frames to the epoch's segment with one write and one
// fdatasync, then applies them in a transaction committed without syncing
// (wal.go and the package documentation say why that is safe).
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
}

// epoch is the log's current segments: lanes[0] starts with the base, the
// others, taken when a batch first needs them, with a lane frame. lanes is
// empty between epochs.
type epoch struct {
	lanes   []lane
	entries int
	pin     *bolt.Tx // a read transaction on the base, so bbolt reuses none of its pages
}

type lane struct {
	f   *os.File
	seq uint64
	off int64
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
	err chan error // buffered 1
}

// beforeCommit, when a test sets it, runs in every write transaction whose
// operations all succeeded, right before bbolt commits it, so the test can
// tell what was synced before the commit.
var beforeCommit func(tx *bolt.Tx)

// replayed, when a test sets it, runs after each transaction a replay
// applies again (n counts them); an error stops the replay there.
var replayed func(n int) error

// errRedo aborts a batch whose transaction one fn failed.
var errRedo = errors.New("boltstore: redo batch")

func newCommitter(db *bolt.DB, dir string, dbf *os.File, nextSeq uint64, logf func(string, ...any)) *committer {
	c := &committer{db: db, dir: dir, dbf: dbf, logf: logf, nextSeq: nextSeq, wake: make(chan struct{}, 1), done: make(chan struct{})}
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
func (c *committer) deposit(ctx context.Context, d *deposit) error {
	return c.submit(ctx, &txOp{fn: d.apply, dep: d, err: make(chan error, 1)})
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
	var big, small, other []*txOp
	for _, op := range ops {
		switch {
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
	lone := len(big) == 0 && len(small) == 1 && len(other) == 0 && !c.ep.open() && streak == 0
	if len(other) == 0 && !lone {
		c.inOrder(ops)
		return
	}
	c.inOrder(big)
	rest := append(small, other...)
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
		for n < len(ops) && (ops[n].dep != nil) == (ops[0].dep != nil) && (ops[0].dep == nil || n < chunkLimit) {
			n++
		}
		if ops[0].dep != nil {
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
	committed, err := c.runTx(ops, false, false)
	if committed && err == nil {
		c.endEpoch()
	}
}

// logged writes the deposits' frames, makes them durable with one
// fdatasync, and applies them in one transaction, committed without a sync
// when the epoch's base is pinned.
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
	if !roomy && e.open() {
		if err := c.checkpoint(); err != nil {
			fail(ops, err)
			return
		}
	}
	nl := min(len(ops), maxLanes)
	bufs := make([][][]byte, nl) // each lane's, written in one system call where there is one
	if !e.open() {
		base, err := c.beginEpoch(roomy)
		if err != nil {
			fail(ops, fmt.Errorf("boltstore: start log segment: %w", err))
			return
		}
		bufs[0] = append(bufs[0], base)
	}
	for i := len(e.lanes); i < nl; i++ {
		head, err := c.addLane()
		if err != nil {
			fail(ops, fmt.Errorf("boltstore: start log segment: %w", err))
			return
		}
		bufs[i] = append(bufs[i], head)
	}
	txid, kind := c.txid+1, byte(kindDeposit)
	if !roomy {
		kind = kindDepositSynced
	}
	ends := make([]int64, nl)
	for i := range nl {
		ends[i] = e.lanes[i].off
		for _, b := range bufs[i] {
			ends[i] += int64(len(b))
		}
	}
	for j, op := range ops {
		d, i := op.dep, j%nl
		h := depositHead(kind, txid, len(ops), j, d)
		d.loc = segLoc{seq: e.lanes[i].seq, off: ends[i] + int64(len(h)), size: int64(len(d.data))}
		ends[i] = d.loc.off + d.loc.size
		bufs[i] = append(bufs[i], h, d.data)
	}
	err := c.writeLanes(bufs)
	if err != nil {
		// Not acknowledged, yet the frames may have reached the disk: use
		// the txid they claim, then end the epoch with a synced commit
		// above it, so recovery never applies them.
		err = fmt.Errorf("boltstore: write log: %w", err)
		if _, cerr := c.runTx(nil, false, true); cerr != nil {
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
	e.entries += len(ops)
	if _, err := c.runTx(ops, roomy, true); err != nil {
		// The log holds deposits the database lacks, and later txids
		// would not match the log's: stop writing until a reopen replays.
		c.broken = fmt.Errorf("%w: %v", errLogBroken, err)
		return
	}
	if !roomy {
		c.endEpoch()
	}
}

func fail(ops []*txOp, err error) {
	for _, op := range ops {
		op.err <- err
	}
}

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
		if op.dep != nil {
			need += opNeed(op.dep)
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

// writeLanes writes each lane's buffers to its segment and fdatasyncs it,
// the lanes in parallel.
func (c *committer) writeLanes(bufs [][][]byte) error {
	one := func(i int) error {
		l := c.ep.lanes[i]
		if err := writeAt(l.f, bufs[i], l.off); err != nil {
			return err
		}
		return fdatasync(l.f)
	}
	if len(bufs) == 1 {
		return one(0)
	}
	errs := make([]error, len(bufs))
	var wg sync.WaitGroup
	for i := range bufs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = one(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

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
	if _, err := c.runTx(nil, false, true); err != nil {
		c.broken = fmt.Errorf("%w: %v", errLogBroken, err)
		return c.broken
	}
	c.endEpoch()
	return nil
}

func (c *committer) endEpoch() {
	if c.ep.pin != nil {
		c.ep.pin.Rollback()
	}
	for _, l := range c.ep.lanes {
		l.f.Close()
	}
	c.ep = epoch{}
}

// runTx runs ops in one transaction, committed with bbolt's fdatasyncs
// unless noSync. When one op fails, the transaction is rolled back, that op
// gets its error, and the others run again without it: each op sees exactly
// the state of the ops committed before it. With always, the transaction
// commits even when no op is left, so that it takes the txid the log
// claimed for it. committed says whether a commit was attempted.
func (c *committer) runTx(ops []*txOp, noSync, always bool) (committed bool, err error) {
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
		}
		fail(ops, err)
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
			if _, err := c.runTx(nil, true, true); err != nil {
				return err
			}
		}
		ops := make([]*txOp, n)
		for i, fr := range frames[:n] {
			d, err := parseDeposit(fr)
			if err != nil {
				return fmt.Errorf("%w: log segment %d at %d: %v", ErrCorrupt, rc.seq, fr.off, err)
			}
			d.loc = segLoc{seq: fr.seq, off: fr.dataOff(), size: int64(len(d.data))}
			ops[i] = &txOp{fn: d.apply, dep: d, err: make(chan error, 1)}
		}
		if _, err := c.runTx(ops, true, true); err != nil {
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
		if _, err := c.runTx(nil, true, true); err != nil {
			return err
		}
	}
	_, err = c.runTx(nil, false, true)
	return err
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
