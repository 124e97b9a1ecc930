package imapserver

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// TestExpungeKeepsWhatWasUndeleted: a client marks two messages \Deleted;
// before it EXPUNGEs, another node clears \Deleted on one, or moves it to
// Trash, and this node has not heard of it yet. EXPUNGE removes only the
// other message, says EXPUNGE for it alone, and the client learns of the
// other node's change once it arrives.
func TestExpungeKeepsWhatWasUndeleted(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		change func(e *env, m um.Message) um.Change
		// after the other node's change is delivered, a NOOP says this
		after string
		// and the kept message is in this folder
		folder string
	}{
		{
			name: "flag cleared",
			change: func(e *env, m um.Message) um.Change {
				changed, err := e.remote().SetFlags(ctx, "1001", []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsRemove, Flags: um.FlagDeleted})
				if err != nil || len(changed) != 1 {
					t.Fatalf("remote SetFlags = %v, %v", changed, err)
				}
				return um.Change{Events: []um.Event{{Kind: um.EventFlags, Folder: um.Inbox, Message: changed[0]}}}
			},
			after:  "FLAGS (\\Recent))",
			folder: um.Inbox,
		},
		{
			name: "moved to Trash",
			change: func(e *env, m um.Message) um.Change {
				moved, err := e.remote().Move(ctx, "1001", []uuid.UUID{m.ID}, um.Trash, time.Now())
				if err != nil || len(moved) != 1 {
					t.Fatalf("remote Move = %v, %v", moved, err)
				}
				return um.Change{Events: []um.Event{
					{Kind: um.EventRemoved, Folder: um.Inbox, Message: um.Message{ID: m.ID, UID: m.UID, Folder: um.Inbox}},
					{Kind: um.EventAdded, Folder: um.Trash, Message: moved[0]},
				}}
			},
			after:  "* 1 EXPUNGE",
			folder: um.Trash,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, deliver := newClusterEnv(t)
			keep := e.deposit("1001", "+1", 10)
			gone := e.deposit("1001", "+2", 10)
			r := dialRaw(t, e.tlsAddr, e.clientTLS)
			r.cmd("a", "LOGIN alice alice-pw")
			r.cmd("b", "SELECT INBOX")
			if got := r.cmd("c", `STORE 1:2 +FLAGS.SILENT (\Deleted)`); !strings.HasPrefix(got, "c OK") {
				t.Fatalf("STORE = %q", got)
			}
			c := tt.change(e, keep)
			lines := r.until0("d EXPUNGE", "d")
			got := strings.Join(lines, "|")
			if !strings.Contains(got, "* 2 EXPUNGE") || strings.Contains(got, "* 1 EXPUNGE") || !strings.HasPrefix(lines[len(lines)-1], "d OK") {
				t.Fatalf("EXPUNGE = %q, want * 2 EXPUNGE only", got)
			}
			m, err := e.remote().Get(ctx, "1001", keep.ID)
			if err != nil || m.Folder != tt.folder {
				t.Fatalf("kept message: %+v, %v; want it in %s", m, err, tt.folder)
			}
			if _, err := e.remote().Get(ctx, "1001", gone.ID); err == nil {
				t.Fatal("the other \\Deleted message is still stored")
			}
			// Until the change arrives the client still sees message 1.
			lines = r.until0("e FETCH 1:* (UID)", "e")
			if got := strings.Join(lines, "|"); strings.Count(got, "FETCH (UID") != 1 {
				t.Fatalf("FETCH 1:* after EXPUNGE = %q, want one message", got)
			}
			deliver(c)
			waitFor(t, "the other node's change told to the client", func() bool {
				lines := r.until0("f NOOP", "f")
				return strings.Contains(strings.Join(lines, "|"), tt.after)
			})
		})
	}
}

// TestUIDExpungeOnlyNamedAndDeleted: UID EXPUNGE removes the \Deleted
// messages among those named, and CLOSE the rest.
func TestUIDExpungeOnlyNamedAndDeleted(t *testing.T) {
	e := newEnv(t, nil)
	var ms []um.Message
	for _, n := range []string{"+1", "+2", "+3"} {
		ms = append(ms, e.deposit("1001", n, 10))
	}
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	r.cmd("b", "SELECT INBOX")
	r.cmd("c", `STORE 1,3 +FLAGS.SILENT (\Deleted)`)
	lines := r.until0("d UID EXPUNGE 2:3", "d")
	if got := strings.Join(lines, "|"); !strings.Contains(got, "* 3 EXPUNGE") || strings.Count(got, "EXPUNGE") != 2 {
		t.Fatalf("UID EXPUNGE 2:3 = %q, want * 3 EXPUNGE only", got)
	}
	if got := len(e.list("1001", um.Inbox)); got != 2 {
		t.Fatalf("INBOX holds %d after UID EXPUNGE, want 2", got)
	}
	if got := r.cmd("e", "CLOSE"); !strings.HasPrefix(got, "e OK") {
		t.Fatalf("CLOSE = %q", got)
	}
	msgs := e.list("1001", um.Inbox)
	if len(msgs) != 1 || msgs[0].ID != ms[1].ID {
		t.Fatalf("INBOX after CLOSE = %+v, want message 2 only", msgs)
	}
}

// TestUIDExpungeStar: "*" in UID EXPUNGE names the highest UID (RFC 9051),
// so n:* with n past it still names the last message.
func TestUIDExpungeStar(t *testing.T) {
	e := newEnv(t, nil)
	for _, n := range []string{"+1", "+2", "+3"} {
		e.deposit("1001", n, 10)
	}
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	r.cmd("b", "SELECT INBOX")
	r.cmd("c", `STORE 1:3 +FLAGS.SILENT (\Deleted)`)
	lines := r.until0("d UID EXPUNGE 9:*", "d")
	if got := strings.Join(lines, "|"); !strings.Contains(got, "* 3 EXPUNGE") || strings.Count(got, "EXPUNGE") != 2 {
		t.Fatalf("UID EXPUNGE 9:* = %q, want * 3 EXPUNGE only", got)
	}
	if got := len(e.list("1001", um.Inbox)); got != 2 {
		t.Fatalf("INBOX holds %d after UID EXPUNGE 9:*, want 2", got)
	}
}
