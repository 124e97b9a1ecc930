package imapserver

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// TestOutOfOrderDepositsReachClient: on a cluster, another node deposits
// (UID 2) just before this node does (UID 3), and this node's own change
// is announced first, the other node's one later. The client is told of
// both messages, in UID order, and the late announcement changes nothing.
func TestOutOfOrderDepositsReachClient(t *testing.T) {
	ctx := context.Background()
	e, deliver := newClusterEnv(t)
	e.deposit("1001", "+1", 10)
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	r.cmd("b", "SELECT INBOX")

	// The other node's deposit, committed but not yet announced here.
	remote, err := e.remote().Append(ctx, "1001", um.Message{
		ID: uuid.New(), Folder: um.Inbox, CallerNumber: "+2", Time: time.Now(), Duration: time.Second,
		AudioType: "audio/wav", Added: time.Now(),
	}, bytes.NewReader(silence(10)))
	if err != nil {
		t.Fatal(err)
	}
	local := e.deposit("1001", "+3", 10)
	if remote.UID != 2 || local.UID != 3 {
		t.Fatalf("UIDs: remote %d, local %d; want 2 and 3", remote.UID, local.UID)
	}
	waitFor(t, "both deposits told to the client", func() bool {
		lines := r.until0("c NOOP", "c")
		return strings.Contains(strings.Join(lines, "|"), "* 3 EXISTS")
	})
	deliver(um.Change{Events: []um.Event{{Kind: um.EventAdded, Folder: um.Inbox, Message: remote}}})
	// A change after the late one, so the test knows it was applied.
	e.deposit("1001", "+4", 10)
	waitFor(t, "the next deposit told to the client", func() bool {
		lines := r.until0("d NOOP", "d")
		got := strings.Join(lines, "|")
		if strings.Contains(got, "EXISTS") && !strings.Contains(got, "* 4 EXISTS") {
			t.Fatalf("NOOP after the late announcement = %q, want * 4 EXISTS", got)
		}
		return strings.Contains(got, "* 4 EXISTS")
	})
	lines := r.until0("f UID FETCH 1:* (UID)", "f")
	got := strings.Join(lines, "|")
	for i, uid := range []string{"UID 1", "UID 2", "UID 3", "UID 4"} {
		if !strings.Contains(got, "* "+string(rune('1'+i))+" FETCH ("+uid+")") {
			t.Fatalf("UID FETCH 1:* = %q, want UIDs 1-4 at sequence numbers 1-4", got)
		}
	}
}

// TestViewOutOfOrderEvents: an event for a UID the view cannot account
// for (lower than one it holds, or past the next one) marks the view for
// a reload instead of being dropped or guessed at.
func TestViewOutOfOrderEvents(t *testing.T) {
	msg := func(uid um.UID) um.Message { return um.Message{UID: uid, Folder: um.Inbox} }
	tests := []struct {
		name   string
		ev     um.Event
		resync bool
	}{
		{"next added", um.Event{Kind: um.EventAdded, Message: msg(3)}, false},
		{"known added again", um.Event{Kind: um.EventAdded, Message: msg(2)}, false},
		{"lower unknown added", um.Event{Kind: um.EventAdded, Message: msg(1)}, true},
		{"added past a gap", um.Event{Kind: um.EventAdded, Message: msg(4)}, true},
		{"flags of an unknown new message", um.Event{Kind: um.EventFlags, Message: msg(3)}, true},
		{"flags of a gone message", um.Event{Kind: um.EventFlags, Message: msg(1)}, false},
		{"removal of an unknown new message", um.Event{Kind: um.EventRemoved, Message: msg(5)}, true},
		{"removal of a gone message", um.Event{Kind: um.EventRemoved, Message: msg(1)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := &view{folder: um.Inbox, keywords: map[string]bool{}, next: 3}
			v.msgs = []*entry{{msg: msg(2)}}
			v.reported = 1
			tt.ev.Folder = um.Inbox
			v.event(tt.ev)
			if v.resync != tt.resync {
				t.Fatalf("resync after %v = %v, want %v", tt.name, v.resync, tt.resync)
			}
		})
	}
}

// TestOwnCopyAfterUnannouncedDeposit: another node deposits (UID 2), and
// before that is announced here the client copies a message into the
// selected folder (UID 3). The client is told of both, in UID order.
func TestOwnCopyAfterUnannouncedDeposit(t *testing.T) {
	ctx := context.Background()
	e, _ := newClusterEnv(t)
	e.deposit("1001", "+1", 10)
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	r.cmd("b", "SELECT INBOX")
	if _, err := e.remote().Append(ctx, "1001", um.Message{
		ID: uuid.New(), Folder: um.Inbox, CallerNumber: "+2", Time: time.Now(), Duration: time.Second,
		AudioType: "audio/wav", Added: time.Now(),
	}, bytes.NewReader(silence(10))); err != nil {
		t.Fatal(err)
	}
	lines := r.until0("c COPY 1 INBOX", "c")
	if got := strings.Join(lines, "|"); !strings.Contains(got, "c OK") {
		t.Fatalf("COPY = %q", got)
	}
	lines = r.until0("d UID FETCH 1:* (UID)", "d")
	got := strings.Join(lines, "|")
	for i, uid := range []string{"UID 1", "UID 2", "UID 3"} {
		if !strings.Contains(got, "* "+string(rune('1'+i))+" FETCH ("+uid+")") {
			t.Fatalf("after COPY, UID FETCH 1:* = %q, want UIDs 1-3 at sequence numbers 1-3", got)
		}
	}
}
