package imapserver

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/embeddedum/um"
)

// TestSelectedFolderGoneAway: another session deletes the selected folder
// or renames it away. The client is told its messages are expunged, later
// commands in it get NO [NONEXISTENT], and a folder created again under
// the name (a new UIDVALIDITY) never feeds the old selection.
func TestSelectedFolderGoneAway(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// away makes "Work" go away, the way another session or node does.
		away func(t *testing.T, e *env, deliver func(um.Change))
	}{
		{"deleted", func(t *testing.T, e *env, _ func(um.Change)) {
			if err := e.mailbox("1001").DeleteFolder(ctx, "Work"); err != nil {
				t.Fatal(err)
			}
		}},
		{"renamed away", func(t *testing.T, e *env, _ func(um.Change)) {
			if err := e.mailbox("1001").RenameFolder(ctx, "Work", "Old"); err != nil {
				t.Fatal(err)
			}
		}},
		{"deleted on another node, resync", func(t *testing.T, e *env, deliver func(um.Change)) {
			if err := e.remote().DeleteFolder(ctx, "1001", "Work"); err != nil {
				t.Fatal(err)
			}
			if _, err := e.remote().CreateFolder(ctx, "1001", "Work"); err != nil {
				t.Fatal(err)
			}
			deliver(um.Change{Events: []um.Event{{Kind: um.EventResync}}})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, deliver := newClusterEnv(t)
			mb := e.mailbox("1001")
			if _, err := mb.CreateFolder(ctx, "Work"); err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"one", "two"} {
				if _, err := mb.Append(ctx, "Work", um.Message{}, bytes.NewReader([]byte("Subject: "+s+"\r\n\r\n"+s+"\r\n"))); err != nil {
					t.Fatal(err)
				}
			}
			r := dialRaw(t, e.tlsAddr, e.clientTLS)
			r.cmd("a", "LOGIN alice alice-pw")
			r.cmd("b", "SELECT Work")

			tt.away(t, e, deliver)
			// The name comes back as a new folder with messages of its own.
			if _, err := mb.CreateFolder(ctx, "Work"); err != nil && !strings.Contains(err.Error(), "exists") {
				t.Fatal(err)
			}
			for _, s := range []string{"new1", "new2", "new3"} {
				if _, err := mb.Append(ctx, "Work", um.Message{}, bytes.NewReader([]byte("Subject: "+s+"\r\n\r\n"+s+"\r\n"))); err != nil {
					t.Fatal(err)
				}
			}
			var got string
			waitFor(t, "EXPUNGE of the selected folder's messages", func() bool {
				got += strings.Join(r.until0("c NOOP", "c"), "|") + "|"
				return strings.Contains(got, "* 1 EXPUNGE")
			})
			if !strings.Contains(got, "* 2 EXPUNGE") || strings.Contains(got, "EXISTS") {
				t.Fatalf("NOOPs after the folder went away = %q, want EXPUNGE 2 and 1 and no EXISTS", got)
			}
			for _, cmd := range []string{"FETCH 1:* (UID)", "UID FETCH 1:* (FLAGS)", `STORE 1 +FLAGS (\Seen)`, "SEARCH ALL", "COPY 1 INBOX", "UID MOVE 1:* INBOX"} {
				if got := r.cmd("d", cmd); !strings.HasPrefix(got, "d NO [NONEXISTENT]") {
					t.Errorf("%s in the folder gone = %q, want NO [NONEXISTENT]", cmd, got)
				}
			}
			// More changes to the new folder never reach the old selection.
			if _, err := mb.Append(ctx, "Work", um.Message{}, bytes.NewReader([]byte("Subject: new4\r\n\r\nnew4\r\n"))); err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(r.until0("e NOOP", "e"), "|"); got != "e OK NOOP completed" {
				t.Fatalf("NOOP after the new folder changed = %q, want nothing", got)
			}
			if got := r.cmd("f", "CLOSE"); !strings.HasPrefix(got, "f OK") {
				t.Fatalf("CLOSE = %q, want OK", got)
			}
			lines := r.until0("g SELECT Work", "g")
			if got := strings.Join(lines, "|"); !strings.Contains(got, "* 4 EXISTS") {
				t.Fatalf("SELECT of the new folder = %q, want 4 EXISTS", got)
			}
			if n := len(e.list("1001", "Work")); n != 4 {
				t.Fatalf("new Work holds %d, want 4 (CLOSE expunged nothing)", n)
			}
		})
	}
}
