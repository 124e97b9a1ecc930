package boltstore

import (
	"os"
	"sync"
)

// liveSegs counts, for each log segment this process created, the contents
// that stay in it (deposits larger than inlineMax) and are still named, so
// that a segment no content is in any more can be deleted while the store
// runs, rather than left, its ranges punched out, until the sweep after the
// next Open. Segments older than the process are not counted: the
// contents an earlier process put in them are known only from um.db, and
// that sweep deletes them once none is named.
//
// A segment is spent once its epoch has ended and no content is in it:
// at once when it never held one (only other writes' frames, and small
// deposits', whose contents um.db holds), or when the last of its
// contents is released (Store.deleteBlobs, which runs only once the
// removal is durable and no replay can read the range). A spent segment is
// deleted once a later epoch's base frame is on disk (committer.deleteSpent):
// recovery reads the newest epoch only, so nothing reads it again.
type liveSegs struct {
	first uint64 // the first segment this process creates

	mu    sync.Mutex
	segs  map[uint64]*liveSeg
	spent []uint64
}

type liveSeg struct {
	contents int
	ended    bool
}

func newLiveSegs(first uint64) *liveSegs {
	return &liveSegs{first: first, segs: make(map[uint64]*liveSeg)}
}

// added counts a content committed into segment seq.
func (l *liveSegs) added(seq uint64) {
	if seq < l.first {
		return // a replay's, into an earlier process's segment
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.segs[seq]
	if s == nil {
		s = new(liveSeg)
		l.segs[seq] = s
	}
	s.contents++
}

// ended says segment seq takes no more frames: its epoch ended.
func (l *liveSegs) ended(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.segs[seq]
	if s == nil || s.contents == 0 {
		delete(l.segs, seq)
		l.spent = append(l.spent, seq)
		return
	}
	s.ended = true
}

// released uncounts a content of segment seq and reports whether that
// made seq spent: then the caller need not free the content's range, since
// the whole segment goes.
func (l *liveSegs) released(seq uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.segs[seq]
	if s == nil {
		return false
	}
	if s.contents--; s.contents > 0 || !s.ended {
		return false
	}
	delete(l.segs, seq)
	l.spent = append(l.spent, seq)
	return true
}

// takeSpent returns the spent segments and forgets them.
func (l *liveSegs) takeSpent() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.spent
	l.spent = nil
	return s
}

// deleteSpent deletes the spent segments. Call it only once a later
// epoch's base frame is durable. A deletion that a crash undoes leaves a
// segment older than the newest base, which recovery does not read and
// the sweep after Open deletes; one that fails is left to that sweep too.
func (c *committer) deleteSpent() {
	for _, seq := range c.segs.takeSpent() {
		if err := os.Remove(segPath(c.dir, seq)); err != nil && !isNotExist(err) {
			c.logf("boltstore: delete spent log segment: %v", err)
		}
	}
}
