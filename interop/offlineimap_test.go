package interop

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// offlineimaprc syncs INBOX of the demo over implicit TLS. offlineimap
// checks DNS names only, not IP addresses, against the certificate: the
// host is localhost.
const offlineimaprc = `[general]
accounts = voice
metadata = %[1]s/meta
ui = quiet

[Account voice]
localrepository = local
remoterepository = pbx

[Repository local]
type = Maildir
localfolders = %[1]s/mail

[Repository pbx]
type = IMAP
remotehost = localhost
remoteport = %[2]s
ssl = yes
sslcacertfile = %[3]s
remoteuser = %[4]s
remotepass = %[5]s
folderfilter = lambda folder: folder == 'INBOX'
`

// byCaller returns the Maildir message that is the voicemail from caller.
func byCaller(tb testing.TB, msgs []maildirMsg, caller string) maildirMsg {
	tb.Helper()
	for _, m := range msgs {
		if bytes.Contains(m.data, []byte("Subject: Voice message from "+caller+" ")) {
			return m
		}
	}
	tb.Fatalf("no Maildir message is the voicemail from %s (of %d)", caller, len(msgs))
	return maildirMsg{}
}

// clearMaildirFlag renames a message file without flag, as a mail client
// that clears a flag does.
func clearMaildirFlag(tb testing.TB, m maildirMsg, flag byte) {
	tb.Helper()
	base, flags, _ := strings.Cut(filepath.Base(m.path), ":2,")
	to := filepath.Join(filepath.Dir(filepath.Dir(m.path)), "cur", base+":2,"+strings.ReplaceAll(flags, string(flag), ""))
	if err := os.Rename(m.path, to); err != nil {
		tb.Fatal(err)
	}
}

// TestOfflineimap syncs the demo's INBOX into a Maildir with offlineimap and
// checks both directions: what the phone did shows in the Maildir, what the
// user did in the Maildir reaches the phone and the lamp.
func TestOfflineimap(t *testing.T) {
	oi := program(t, "offlineimap", "offlineimap")
	d := startDemo(t)
	d.call("deposit " + testUser + " 5551234 Alice Smith")
	d.call("urgent " + testUser + " +4930123456 Bob Jones")
	dir := t.TempDir()
	rc := filepath.Join(dir, "offlineimaprc")
	conf := fmt.Sprintf(offlineimaprc, dir, d.port(d.imaps), d.certFile(), testUser, demoPass)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	inbox := filepath.Join(dir, "mail", "INBOX")
	sync := func() {
		t.Helper()
		run(t, dir, oi, "-c", rc, "-o", "-u", "quiet")
	}

	// Deposits arrive unheard; the urgent one is flagged. Downloading them
	// is not listening.
	sync()
	local := readMaildir(t, inbox)
	if len(local) != 2 {
		t.Fatalf("after the first sync the Maildir holds %d messages, want 2", len(local))
	}
	alice, bob := byCaller(t, local, "Alice Smith"), byCaller(t, local, "Bob Jones")
	if alice.flags != "" || bob.flags != "F" {
		t.Errorf("Maildir flags: Alice %q, Bob %q; want none and F (urgent)", alice.flags, bob.flags)
	}
	if got := d.call("mwi " + testUser); got[0] != "ok 2/0 (1/0)" {
		t.Errorf("mwi after the download = %q, want ok 2/0 (1/0)", got)
	}

	// Reading Alice's in the Maildir is heard on the phone; the phone's
	// heard of Bob's shows in the Maildir.
	d.forget()
	setMaildirFlag(t, alice, 'S')
	d.call("heard " + testUser + " 2")
	d.lamp("on 1/1 (0/1)")
	sync()
	d.lamp("off 0/2 (0/1)")
	local = readMaildir(t, inbox)
	if b := byCaller(t, local, "Bob Jones"); b.flags != "FS" {
		t.Errorf("Bob's Maildir flags after the phone's heard = %q, want FS", b.flags)
	}

	// Marking Alice's unread and starring it relights the lamp, urgent.
	alice = byCaller(t, local, "Alice Smith")
	clearMaildirFlag(t, alice, 'S')
	alice = byCaller(t, readMaildir(t, inbox), "Alice Smith")
	setMaildirFlag(t, alice, 'F')
	sync()
	d.lamp("on 1/1 (1/1)")
	d.expectList("list "+testUser,
		"1 new urgent 5551234 3s Alice Smith",
		"2 heard urgent +4930123456 3s Bob Jones")

	// Deleting Bob's file deletes the voicemail (offlineimap expunges).
	bob = byCaller(t, readMaildir(t, inbox), "Bob Jones")
	if err := os.Remove(bob.path); err != nil {
		t.Fatal(err)
	}
	sync()
	d.lamp("on 1/0 (1/0)")
	d.expectList("list "+testUser, "1 new urgent 5551234 3s Alice Smith")
}
