package imapserver

import (
	"testing"

	"github.com/embeddedum/um"
)

// TestViewReloadDiff: after a lost queue the folder is reloaded and
// diffed: removed messages become pending EXPUNGEs, changed flags pending
// FETCHes, new messages pending EXISTS; events repeated afterwards change
// nothing.
func TestViewReloadDiff(t *testing.T) {
	msg := func(uid um.UID, f um.Flags) um.Message { return um.Message{UID: uid, Flags: f, Folder: um.Inbox} }
	ev := func(k um.EventKind, m um.Message) um.Event { return um.Event{Kind: k, Folder: um.Inbox, Message: m} }
	v := &view{folder: um.Inbox, keywords: map[string]bool{}, next: 1}
	for _, uid := range []um.UID{1, 2, 3} {
		v.event(ev(um.EventAdded, msg(uid, 0)))
	}
	v.reported = 3
	if v.resync || len(v.msgs) != 3 {
		t.Fatalf("after adding UIDs 1-3: %d entries, resync %v", len(v.msgs), v.resync)
	}
	v.load([]um.Message{msg(1, um.FlagHeard), msg(3, 0), msg(4, 0)}, 5)
	if len(v.msgs) != 4 || !v.msgs[1].gone || !v.msgs[0].dirty || v.msgs[2].dirty || v.msgs[3].msg.UID != 4 || v.next != 5 {
		t.Fatalf("after load: %d entries, 2 gone %v, 1 dirty %v, last UID %d, next %d", len(v.msgs), v.msgs[1].gone, v.msgs[0].dirty, v.msgs[3].msg.UID, v.next)
	}
	// Replayed events are ignored.
	v.event(ev(um.EventAdded, msg(2, 0)))
	v.event(ev(um.EventAdded, msg(4, 0)))
	if len(v.msgs) != 4 {
		t.Fatalf("replayed EventAdded changed the view: %d entries, want 4", len(v.msgs))
	}
	v.event(ev(um.EventFlags, msg(2, um.FlagDeleted)))
	if v.msgs[1].dirty {
		t.Fatal("flag event for a removed message marked it for FETCH")
	}
	v.event(ev(um.EventRemoved, msg(1, 0)))
	if v.resync {
		t.Fatal("replayed events marked the view for a reload")
	}
	if got := v.find(3); got != 2 {
		t.Fatalf("find(3) = %d, want 2", got)
	}
	// An own COPY into the folder lands in its place.
	v.insert(msg(6, 0))
	v.insert(msg(5, 0))
	if len(v.msgs) != 6 || v.msgs[4].msg.UID != 5 || v.msgs[5].msg.UID != 6 || v.next != 7 {
		t.Fatalf("after insert: %d entries, next %d", len(v.msgs), v.next)
	}
	// A message below one the client knows cannot be placed.
	w := &view{folder: um.Inbox, keywords: map[string]bool{}, next: 4}
	w.msgs = []*entry{{msg: msg(2, 0)}, {msg: msg(3, 0)}}
	w.reported = 2
	if hidden := w.load([]um.Message{msg(1, 0), msg(2, 0), msg(3, 0)}, 4); hidden != 1 || len(w.msgs) != 2 {
		t.Fatalf("load of a UID below known ones: hidden %d, %d entries; want 1 and 2", hidden, len(w.msgs))
	}
}
