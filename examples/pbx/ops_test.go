package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/boltstore"
)

// TestLimitFlags: -max-messages and -max-time refuse the deposit past the
// limit with an error line and keep what was there.
func TestLimitFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"max-messages", []string{"-max-messages", "2"}},
		// Every deposit records 3 s: the third would make 9 s.
		{"max-time", []string{"-max-time", "8s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := runScript(t, t.TempDir(), "deposit 1001 555\ndeposit 1001 556\ndeposit 1001 557\nlist 1001\n", append(tt.args, twoUsers...)...)
			lines := strings.Split(got, "\n")
			var answers []string
			for _, l := range lines {
				if !strings.HasPrefix(l, "MWI ") && l != "" {
					answers = append(answers, l)
				}
			}
			want := []string{"ok 1", "ok 2", "error: ", "ok 2", "1 new 555 3s", "2 new 556 3s"}
			if len(answers) != len(want) {
				t.Fatalf("answers:\n%s\nwant %q", got, want)
			}
			for i, w := range want {
				if !strings.HasPrefix(answers[i], w) {
					t.Errorf("answer %d = %q, want %q", i+1, answers[i], w)
				}
			}
			if !strings.Contains(answers[2], "mailbox full") {
				t.Errorf("refused deposit answered %q, want it to say mailbox full", answers[2])
			}
		})
	}
}

func TestLimitFlagsParse(t *testing.T) {
	cfg, err := parseFlags([]string{"-max-messages", "100", "-max-time", "30m", "-trash-retention", "720h"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.limits.apply(&um.Options{})
	if o.MaxMessages != 100 || o.MaxRecordedTime != 30*time.Minute || o.TrashRetention != 720*time.Hour {
		t.Errorf("Options = %d, %v, %v; want 100, 30m, 720h", o.MaxMessages, o.MaxRecordedTime, o.TrashRetention)
	}
	for _, args := range [][]string{{"-max-messages", "-1"}, {"-max-time", "-1s"}, {"-trash-retention", "-1h"}, {"-max-time", "soon"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) = nil error, want one", args)
		}
	}
}

// TestBackupAndCheck: backup answers with the messages it holds, check
// with the messages and no problems; after the contents are lost, check
// names the messages; the backup, restored, serves the messages.
func TestBackupAndCheck(t *testing.T) {
	dir := t.TempDir()
	backup := filepath.Join(t.TempDir(), "backup 1") // a name with a space
	got, _ := runScript(t, dir, "deposit 1001 555\ndeposit 1002 556\nbackup "+backup+"\ncheck\nbackup "+backup+"\nbackup\ncheck now\n", twoUsers...)
	want := regexp.MustCompile(`^MWI 1001 on 1/0 \(0/0\)
ok 1
MWI 1002 on 1/0 \(0/0\)
ok 1
ok 2 messages
ok 2 messages, 0 problems
error: boltstore: backup: .* is not empty: file already exists
error: usage: backup DIR
error: usage: check
$`)
	if !want.MatchString(got) {
		t.Fatalf("output:\n%s\nwant:\n%s", got, want)
	}

	// The store keeps deposits' audio in its log: lose the log's segments.
	segs, err := filepath.Glob(filepath.Join(dir, "store", "log", "*"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("log segments = %v, %v; want some", segs, err)
	}
	for _, f := range segs {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	got, _ = runScript(t, dir, "check\n", twoUsers...)
	for _, w := range []string{"error: boltstore: store is damaged: 2 problems: ", "mailbox 1001 folder INBOX UID 1: content in the log at log/", "mailbox 1002 folder INBOX UID 1: content in the log at log/", "content missing: the record says 48044 bytes"} {
		if !strings.Contains(got, w) || strings.Count(got, "\n") != 1 {
			t.Errorf("check of a damaged store = %q, want one line with %q", got, w)
		}
	}

	restored := t.TempDir()
	if _, err := boltstore.Restore(t.Context(), backup, filepath.Join(restored, "store")); err != nil {
		t.Fatal(err)
	}
	got, _ = runScript(t, restored, "list 1001\nlist 1002\ncheck\n", twoUsers...)
	if want := "ok 1\n1 new 555 3s\nok 1\n1 new 556 3s\nok 2 messages, 0 problems\n"; got != want {
		t.Errorf("restored PBX:\n%s\nwant:\n%s", got, want)
	}
}
