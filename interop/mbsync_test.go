package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/embeddedum/um"
)

// maildirMsg is one message file of a Maildir folder.
type maildirMsg struct {
	path  string
	flags string // the letters after ":2,"
	data  []byte
}

// readMaildir returns the messages in folder's new and cur directories.
func readMaildir(tb testing.TB, folder string) []maildirMsg {
	tb.Helper()
	var out []maildirMsg
	for _, sub := range []string{"new", "cur"} {
		files, err := filepath.Glob(filepath.Join(folder, sub, "*"))
		if err != nil {
			tb.Fatal(err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				tb.Fatal(err)
			}
			_, flags, _ := strings.Cut(filepath.Base(f), ":2,")
			out = append(out, maildirMsg{path: f, flags: flags, data: data})
		}
	}
	return out
}

// setMaildirFlag renames a message file into cur with flag added, as a
// mail client that changes a flag does.
func setMaildirFlag(tb testing.TB, m maildirMsg, flag byte) {
	tb.Helper()
	base, flags, _ := strings.Cut(filepath.Base(m.path), ":2,")
	if !strings.ContainsRune(flags, rune(flag)) {
		b := []byte(flags + string(flag))
		sort.Slice(b, func(i, j int) bool { return b[i] < b[j] })
		flags = string(b)
	}
	to := filepath.Join(filepath.Dir(filepath.Dir(m.path)), "cur", base+":2,"+flags)
	if err := os.Rename(m.path, to); err != nil {
		tb.Fatal(err)
	}
}

// tuid is the header mbsync adds to the messages it stores, to find them
// again if a sync is cut short.
var tuid = regexp.MustCompile(`(?m)^X-TUID: [^\n]*\n`)

// find returns the Maildir copy of the voicemail whose rendering is want.
// mbsync stores messages with LF line ends and an X-TUID header.
func find(msgs []maildirMsg, want []byte) (maildirMsg, bool) {
	lf := bytes.ReplaceAll(want, []byte("\r\n"), []byte("\n"))
	for _, m := range msgs {
		if data := tuid.ReplaceAll(m.data, nil); bytes.Equal(data, want) || bytes.Equal(data, lf) {
			return m, true
		}
	}
	return maildirMsg{}, false
}

func TestMbsync(t *testing.T) {
	mbsync := program(t, "mbsync", "isync")
	for _, tc := range []struct{ name, sslType string }{
		{"starttls", "STARTTLS"},
		{"imaps", "IMAPS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t, 3)
			ctx := context.Background()
			addr := e.PlainAddr
			if tc.sslType == "IMAPS" {
				addr = e.TLSAddr
			}
			// mbsync checks DNS names only, not IP addresses, against the
			// certificate.
			_, port, _ := strings.Cut(addr, ":")
			host := "localhost"
			dir := t.TempDir()
			mail := filepath.Join(dir, "mail")
			if err := os.Mkdir(mail, 0o700); err != nil {
				t.Fatal(err)
			}
			rc := filepath.Join(dir, "mbsyncrc")
			conf := fmt.Sprintf(`IMAPAccount um
Host %s
Port %s
User %s
Pass %s
SSLType %s
CertificateFile %s

IMAPStore um-remote
Account um

MaildirStore local
Path %s/
Inbox %s/INBOX
SubFolders Verbatim

Channel voice
Far :um-remote:
Near :local:
Patterns INBOX
Create Near
Expunge Both
Sync All
SyncState *
`, host, port, testUser, testPass, tc.sslType, e.CertFile, mail, mail)
			if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			sync := func() { run(t, dir, mbsync, "-c", rc, "-a") }

			sync()
			inbox := filepath.Join(mail, "INBOX")
			local := readMaildir(t, inbox)
			if len(local) != len(e.msgs) {
				t.Fatalf("after the first sync the Maildir holds %d messages, want %d", len(local), len(e.msgs))
			}
			copies := make([]maildirMsg, len(e.msgs))
			for i, m := range e.msgs {
				c, ok := find(local, e.rendered(t, m))
				if !ok {
					t.Fatalf("no Maildir file holds the rendered voicemail UID %d", m.UID)
				}
				copies[i] = c
				if strings.Contains(c.flags, "S") {
					t.Errorf("UID %d synced with flags %q: it was never heard", m.UID, c.flags)
				}
				if got := strings.Contains(c.flags, "F"); got != m.Urgent {
					t.Errorf("UID %d synced with flags %q, urgent = %v (urgent is \\Flagged)", m.UID, c.flags, m.Urgent)
				}
				// Downloading must not count as listening.
				if now, err := e.message(t, m); err != nil || now.Heard() {
					t.Errorf("um: UID %d heard = %v, %v after mbsync downloaded it; want unheard", m.UID, now.Heard(), err)
				}
			}

			// The user reads one message and deletes another in the mail
			// client, while the phone plays the urgent one.
			setMaildirFlag(t, copies[0], 'S')
			setMaildirFlag(t, copies[2], 'T')
			if err := e.mb.MarkHeard(ctx, e.msgs[1].ID); err != nil {
				t.Fatal(err)
			}
			sync()

			if m, err := e.message(t, e.msgs[0]); err != nil || !m.Heard() {
				t.Errorf("um: UID %d heard = %v, %v after mbsync pushed the S flag; want heard", e.msgs[0].UID, m.Heard(), err)
			}
			if m, err := e.message(t, e.msgs[2]); !errors.Is(err, um.ErrNotFound) {
				t.Errorf("um: UID %d after mbsync pushed T with Expunge Both: folder %q, err %v; want um.ErrNotFound", e.msgs[2].UID, m.Folder, err)
			}
			inboxNow, err := e.mb.List(ctx, um.Inbox)
			if err != nil {
				t.Fatal(err)
			}
			if len(inboxNow) != 2 {
				t.Errorf("um: INBOX holds %d messages after the sync, want 2", len(inboxNow))
			}
			e.waitMWI(t, func(s um.MWIState) bool { return s.New == 0 && s.Old == 2 && s.UrgentOld == 1 })

			local = readMaildir(t, inbox)
			if len(local) != 2 {
				t.Errorf("after the second sync the Maildir holds %d messages, want 2", len(local))
			}
			if c, ok := find(local, e.rendered(t, e.msgs[1])); !ok || !strings.Contains(c.flags, "S") {
				t.Errorf("Maildir copy of UID %d (played on the phone): found %v, flags %q; want S", e.msgs[1].UID, ok, c.flags)
			}
		})
	}
}
