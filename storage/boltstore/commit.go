package boltstore

import (
	"context"
	"errors"
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
type committer struct {
	db   *bolt.DB
	wake chan struct{} // buffered 1: a send never blocks
	done chan struct{} // closed when run returns

	mu     sync.Mutex
	queue  []*txOp
	closed bool
}

type txOp struct {
	fn  func(*bolt.Tx) error
	err chan error // buffered 1
}

// beforeCommit, when a test sets it, runs in every write transaction whose
// operations all succeeded, right before bbolt commits it, so the test can
// tell what was synced before the commit.
var beforeCommit func(tx *bolt.Tx)

// errRedo aborts a batch whose transaction one fn failed.
var errRedo = errors.New("boltstore: redo batch")

func newCommitter(db *bolt.DB) *committer {
	c := &committer{db: db, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go c.run()
	return c
}

// do runs fn in a write transaction and returns its error or the commit's.
// When ctx is done before fn has started, do returns ctx.Err() and fn never
// runs; once it has started, do waits for the commit, which is short.
func (c *committer) do(ctx context.Context, fn func(*bolt.Tx) error) error {
	op := &txOp{fn: fn, err: make(chan error, 1)}
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
					return
				}
				break
			}
			c.commit(ops)
		}
	}
}

// commit runs ops in one transaction. When one fails, the transaction is
// rolled back, that op gets its error, and the others run again without it:
// each op sees exactly the state of the ops committed before it.
func (c *committer) commit(ops []*txOp) {
	for len(ops) > 0 {
		failed, ferr := -1, error(nil)
		err := c.db.Update(func(tx *bolt.Tx) error {
			for i, op := range ops {
				if err := op.fn(tx); err != nil {
					failed, ferr = i, err
					return errRedo
				}
			}
			if beforeCommit != nil {
				beforeCommit(tx)
			}
			return nil
		})
		if failed >= 0 {
			ops[failed].err <- ferr
			ops = slices.Delete(ops, failed, failed+1)
			continue
		}
		if err != nil {
			err = &commitError{err}
		}
		for _, op := range ops {
			op.err <- err
		}
		return
	}
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
