package um

import (
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestSeenMarksBounded checks that a client marking very many messages read
// cannot grow the delete-time marks past maxSeenMarks, and that marks older
// than the window make room again.
func TestSeenMarksBounded(t *testing.T) {
	var s seenMarks
	src := new(int)
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for i := 0; i < maxSeenMarks+100; i++ {
		s.set(seenKey{"1001", uuid.New()}, seenMark{source: src, at: t0, newly: true})
	}
	if n := len(s.m); n != maxSeenMarks {
		t.Fatalf("marks after %d sets = %d, want the cap %d", maxSeenMarks+100, n, maxSeenMarks)
	}
	late := seenKey{"1001", uuid.New()}
	s.set(late, seenMark{source: src, at: t0.Add(DeleteSeenWindow + time.Second), newly: true})
	if n := len(s.m); n != 1 {
		t.Errorf("marks after the window passed = %d, want the new one alone", n)
	}
	if _, ok := s.take(late, src, t0.Add(DeleteSeenWindow+2*time.Second)); !ok {
		t.Errorf("take(the new mark) = false, want true")
	}
}

// TestSeenMarksSwept: marks older than DeleteSeenWindow go at the next mark
// set a window after the last sweep, however few there are, so a server
// that runs for days keeps only the marks of its last seconds.
func TestSeenMarksSwept(t *testing.T) {
	var s seenMarks
	src := new(int)
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	for range 10 {
		s.set(seenKey{"1001", uuid.New()}, seenMark{source: src, at: t0, newly: true})
	}
	recent := seenKey{"1001", uuid.New()}
	s.set(recent, seenMark{source: src, at: t0.Add(DeleteSeenWindow / 2), newly: true})
	if n := len(s.m); n != 11 {
		t.Fatalf("marks within the window = %d, want all 11", n)
	}
	s.set(seenKey{"1001", uuid.New()}, seenMark{source: src, at: t0.Add(DeleteSeenWindow + time.Second), newly: true})
	if n := len(s.m); n != 2 {
		t.Errorf("marks a window later = %d, want 2 (the one within the window and the new one)", n)
	}
	if _, ok := s.take(recent, src, t0.Add(DeleteSeenWindow+time.Second)); !ok {
		t.Error("take(a mark within the window) = false, want true")
	}
}
