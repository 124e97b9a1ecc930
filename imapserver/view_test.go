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
	v := &view{folder: um.Inbox, keywords: map[string]bool{}}
	for _, uid := range []um.UID{1, 2, 3} {
		v.add(msg(uid, 0))
	}
	v.reported = 3
	v.load([]um.Message{msg(1, um.FlagHeard), msg(3, 0), msg(4, 0)})
	if len(v.msgs) != 4 || !v.msgs[1].gone || !v.msgs[0].dirty || v.msgs[2].dirty || v.msgs[3].msg.UID != 4 {
		t.Fatalf("after load: %d entries, 2 gone %v, 1 dirty %v, last UID %d", len(v.msgs), v.msgs[1].gone, v.msgs[0].dirty, v.msgs[3].msg.UID)
	}
	// Replayed events are ignored.
	v.add(msg(2, 0))
	v.add(msg(4, 0))
	if len(v.msgs) != 4 {
		t.Fatalf("replayed EventAdded changed the view: %d entries, want 4", len(v.msgs))
	}
	v.setFlags(msg(2, um.FlagDeleted))
	if v.msgs[1].dirty {
		t.Fatal("flag event for a removed message marked it for FETCH")
	}
	v.remove(99)
	if got := v.find(3); got != 2 {
		t.Fatalf("find(3) = %d, want 2", got)
	}
	// An own COPY into the folder below the high-water mark still lands.
	v.insert(msg(5, 0))
	v.add(msg(6, 0))
	v.insert(msg(5, 0))
	if len(v.msgs) != 6 || v.msgs[4].msg.UID != 5 || v.msgs[5].msg.UID != 6 {
		t.Fatalf("after insert: %d entries", len(v.msgs))
	}
}
