package imapserver

import (
	"context"
	"strings"
	"testing"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// lastFlags returns the flags of the last FETCH FLAGS response for seq in
// lines, and whether there was one.
func lastFlags(lines []string, seq string) (string, bool) {
	flags, ok := "", false
	for _, l := range lines {
		rest, found := strings.CutPrefix(l, "* "+seq+" FETCH (")
		if !found {
			continue
		}
		if _, f, found := strings.Cut(rest, "FLAGS ("); found {
			flags, _, _ = strings.Cut(f, ")")
			ok = true
		}
	}
	return flags, ok
}

// TestRemoteFlagsAfterLocalChange: node b marks a message heard, then this
// node marks it unheard again; this node's change is announced at once,
// node b's older one later. The client must end with the store's truth
// (unheard), not with the flags node b's late event carries.
func TestRemoteFlagsAfterLocalChange(t *testing.T) {
	ctx := context.Background()
	e, deliver := newClusterEnv(t)
	m := e.deposit("1001", "+1", 10)
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	r.cmd("b", "SELECT INBOX")

	// Node b's change, committed but not yet announced here.
	heard, err := e.remote().SetFlags(ctx, "1001", []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard})
	if err != nil || len(heard) != 1 || !heard[0].Flags.Has(um.FlagHeard) {
		t.Fatalf("node b's SetFlags = %+v, %v; want the message heard", heard, err)
	}
	if err := e.mailbox("1001").MarkUnheard(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	// Node b's announcement arrives after this node's own.
	deliver(um.Change{Events: []um.Event{{Kind: um.EventFlags, Folder: um.Inbox, Message: heard[0]}}})

	lines := r.until0("c NOOP", "c")
	if f, ok := lastFlags(lines, "1"); ok && strings.Contains(f, `\Seen`) {
		t.Errorf("NOOP told the client FLAGS (%s), want no \\Seen (store: unheard); lines %q", f, lines)
	}
	lines = r.until0("d FETCH 1 (FLAGS)", "d")
	f, ok := lastFlags(lines, "1")
	if !ok || strings.Contains(f, `\Seen`) {
		t.Errorf("FETCH 1 (FLAGS) = %q, want flags without \\Seen", lines)
	}
	if got, _ := e.remote().Get(ctx, "1001", m.ID); got.Flags.Has(um.FlagHeard) {
		t.Fatalf("store has the message heard; the test's premise is wrong")
	}
}

// TestRemoteFlagsManyEvents: a change of node b with several events (read
// with one listing) whose flags are stale for one message, and whose other
// message node b has since moved to Trash: the client sees the store's
// flags, and the moved message expunged.
func TestRemoteFlagsManyEvents(t *testing.T) {
	ctx := context.Background()
	e, deliver := newClusterEnv(t)
	m1 := e.deposit("1001", "+1", 10)
	m2 := e.deposit("1001", "+2", 10)
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	r.cmd("b", "SELECT INBOX")

	heard, err := e.remote().SetFlags(ctx, "1001", []uuid.UUID{m1.ID, m2.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard})
	if err != nil || len(heard) != 2 {
		t.Fatalf("node b's SetFlags = %+v, %v; want both changed", heard, err)
	}
	if err := e.mailbox("1001").MarkUnheard(ctx, m1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.remote().Move(ctx, "1001", []uuid.UUID{m2.ID}, um.Trash, um.Time{}); err != nil {
		t.Fatal(err)
	}
	// Node b's flag change arrives; its move has not yet.
	deliver(um.Change{Events: []um.Event{
		{Kind: um.EventFlags, Folder: um.Inbox, Message: heard[0]},
		{Kind: um.EventFlags, Folder: um.Inbox, Message: heard[1]},
	}})

	lines := r.until0("c NOOP", "c")
	if f, ok := lastFlags(lines, "1"); ok && strings.Contains(f, `\Seen`) {
		t.Errorf("NOOP told the client FLAGS (%s) for message 1, want no \\Seen; lines %q", f, lines)
	}
	if !containsLine(lines, "* 2 EXPUNGE") {
		t.Errorf("NOOP = %q, want * 2 EXPUNGE for the message node b moved away", lines)
	}
	lines = r.until0("d FETCH 1:* (FLAGS)", "d")
	f, ok := lastFlags(lines, "1")
	if !ok || strings.Contains(f, `\Seen`) {
		t.Errorf("FETCH 1:* (FLAGS) = %q, want message 1 without \\Seen", lines)
	}
	if _, ok := lastFlags(lines, "2"); ok {
		t.Errorf("FETCH 1:* (FLAGS) = %q, want message 2 gone", lines)
	}
}

func containsLine(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}
