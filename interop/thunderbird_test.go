package interop

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um/internal/testwait"
)

// tbPrefs is the profile's user.js: one IMAP account on one of the demo's
// ports (socketType 3 is SSL/TLS, 2 STARTTLS),
// Trash as the delete target, and every first-run screen, update check and
// network guess turned off, so that Thunderbird opens straight on the
// account's INBOX as it does for a user the second day. Messages are listed
// in the order received, oldest first, so the first in the list is UID 1.
const tbPrefs = `user_pref("mail.account.account1.identities", "id1");
user_pref("mail.account.account1.server", "server1");
user_pref("mail.account.account2.server", "server2");
user_pref("mail.accountmanager.accounts", "account1,account2");
user_pref("mail.accountmanager.defaultaccount", "account1");
user_pref("mail.accountmanager.localfoldersserver", "server2");
user_pref("mail.identity.id1.fullName", "Voicemail %[1]s");
user_pref("mail.identity.id1.useremail", "%[1]s@pbx.invalid");
user_pref("mail.identity.id1.valid", true);
user_pref("mail.server.server1.type", "imap");
user_pref("mail.server.server1.name", "Voicemail %[1]s");
user_pref("mail.server.server1.hostname", "127.0.0.1");
user_pref("mail.server.server1.port", %[2]s);
user_pref("mail.server.server1.socketType", %[3]d);
user_pref("mail.server.server1.authMethod", 3);
user_pref("mail.server.server1.userName", "%[1]s");
user_pref("mail.server.server1.login_at_startup", true);
user_pref("mail.server.server1.check_new_mail", true);
user_pref("mail.server.server1.use_idle", true);
user_pref("mail.server.server1.delete_model", 1);
user_pref("mail.server.server1.trash_folder_name", "Trash");
user_pref("mail.server.server1.offline_download", false);
user_pref("mail.server.server1.autosync_offline_stores", false);
user_pref("mail.server.server2.type", "none");
user_pref("mail.server.server2.hostname", "Local Folders");
user_pref("mail.server.server2.userName", "nobody");
user_pref("mail.server.server2.name", "Local Folders");
user_pref("mail.shell.checkDefaultClient", false);
user_pref("mail.shell.checkDefaultMail", false);
user_pref("mail.rights.version", 1);
user_pref("mail.provider.enabled", false);
user_pref("mailnews.start_page.enabled", false);
user_pref("mail.winsearch.firstRunDone", true);
user_pref("mail.spotlight.firstRunDone", true);
user_pref("mail.inappnotifications.enabled", false);
user_pref("app.donation.eoy.version.viewed", 999);
user_pref("app.update.enabled", false);
user_pref("app.update.auto", false);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("datareporting.healthreport.uploadEnabled", false);
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
user_pref("network.manage-offline-status", false);
user_pref("offline.autoDetect", false);
user_pref("mail.biff.show_alert", false);
user_pref("mail.biff.play_sound", false);
user_pref("mail.phishing.detection.enabled", false);
user_pref("mailnews.mark_message_read.auto", true);
user_pref("mailnews.mark_message_read.delay", false);
user_pref("mailnews.default_sort_type", 21);
user_pref("mailnews.default_sort_order", 1);
user_pref("mailnews.default_view_flags", 0);
`

// writeTBProfile writes a Thunderbird profile for the demo's mailbox 1001:
// the account, a certificate exception for the demo's self-signed
// certificate on both its ports (the file Thunderbird's "Confirm Security
// Exception" writes), and the saved password.
func writeTBProfile(t *testing.T, d *demo, tbBin string, starttls bool) string {
	t.Helper()
	profile := filepath.Join(t.TempDir(), "profile")
	if err := os.MkdirAll(profile, 0o700); err != nil {
		t.Fatal(err)
	}
	port, socketType := d.port(d.imaps), 3
	if starttls {
		port, socketType = d.port(d.imap), 2
	}
	prefs := fmt.Sprintf(tbPrefs, testUser, port, socketType)
	if err := os.WriteFile(filepath.Join(profile, "user.js"), []byte(prefs), 0o600); err != nil {
		t.Fatal(err)
	}
	fp := d.certSHA256(t)
	var overrides strings.Builder
	overrides.WriteString("# PSM Certificate Override Settings file\n# This is a generated file!  Do not edit.\n")
	for _, addr := range []string{d.imaps, d.imap} {
		fmt.Fprintf(&overrides, "%s:\tOID.2.16.840.1.101.3.4.2.1\t%s\t\n", addr, fp)
	}
	if err := os.WriteFile(filepath.Join(profile, "cert_override.txt"), []byte(overrides.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	libdir := "/usr/lib/thunderbird"
	if real, err := filepath.EvalSymlinks(tbBin); err == nil {
		if _, err := os.Stat(filepath.Join(filepath.Dir(real), "libnss3.so")); err == nil {
			libdir = filepath.Dir(real)
		}
	}
	py := program(t, "python3", "python3")
	cmd := exec.Command(py, "testdata/savelogin.py", libdir, profile, "imap://127.0.0.1", testUser, demoPass)
	// Thunderbird's NSS wants its own companion libraries, not the system's.
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+libdir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("save the login in the profile: %v\n%s", err, out)
	}
	return profile
}

// thunderbird is a running Thunderbird and its IMAP protocol log.
type thunderbird struct {
	t       *testing.T
	display string
	window  string
	log     *protoLog
}

func startThunderbird(t *testing.T, d *demo, starttls bool) *thunderbird {
	t.Helper()
	bin := program(t, "thunderbird", "thunderbird")
	profile := writeTBProfile(t, d, bin, starttls)
	display := startX(t)
	logDir := t.TempDir()
	home := t.TempDir()
	cmd := exec.Command(bin, "--profile", profile, "--no-remote")
	cmd.Env = append(os.Environ(),
		"DISPLAY="+display, "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home,
		"MOZ_LOG=IMAP:5,sync", "MOZ_LOG_FILE="+filepath.Join(logDir, "imap"),
		"MOZ_CRASHREPORTER_DISABLE=1", "MOZ_DISABLE_AUTO_SAFE_MODE=1")
	stderr := new(testwait.Buffer)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	startProc(t, cmd)
	tb := &thunderbird{t: t, display: display, log: &protoLog{t: t, find: func() string {
		// The main process's log; child processes write their own.
		m, _ := filepath.Glob(filepath.Join(logDir, "imap*"))
		for _, p := range m {
			if !strings.Contains(p, "child") {
				return p
			}
		}
		return ""
	}}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Thunderbird's output:\n%s", stderr)
			keepArtifacts(t, display, tb.log.find())
		}
	})
	return tb
}

// keepArtifacts copies, when UM_INTEROP_ARTIFACTS names a directory, a
// failed client's protocol log and a screenshot of its display there (the
// screenshot needs ImageMagick's import), for a look at what went wrong.
func keepArtifacts(t *testing.T, display, logFile string) {
	dir := os.Getenv("UM_INTEROP_ARTIFACTS")
	if dir == "" {
		return
	}
	name := strings.ReplaceAll(t.Name(), "/", "_")
	if b, err := os.ReadFile(logFile); err == nil {
		os.WriteFile(filepath.Join(dir, name+".log"), b, 0o644)
	}
	shot := exec.Command("import", "-window", "root", filepath.Join(dir, name+".png"))
	shot.Env = append(os.Environ(), "DISPLAY="+display)
	if err := shot.Run(); err != nil {
		t.Logf("screenshot: %v", err)
	}
	t.Logf("protocol log and screenshot in %s", dir)
}

// findWindow waits for Thunderbird's main window and gives it the whole
// screen, so the message list is where a user would find it.
func (tb *thunderbird) findWindow() {
	tb.t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		cmd := exec.Command("xdotool", "search", "--name", "Mozilla Thunderbird$")
		cmd.Env = append(os.Environ(), "DISPLAY="+tb.display)
		out, _ := cmd.Output()
		if ids := strings.Fields(string(out)); len(ids) > 0 {
			tb.window = ids[0]
			break
		}
		if time.Now().After(deadline) {
			tb.t.Fatal("Thunderbird's main window never appeared")
		}
		time.Sleep(200 * time.Millisecond)
	}
	xdo(tb.t, tb.display, "windowmove", tb.window, "0", "0")
	xdo(tb.t, tb.display, "windowsize", "--sync", tb.window, "1280", "900")
	xdo(tb.t, tb.display, "windowactivate", "--sync", tb.window)
}

// key types keys into Thunderbird, as a user at its window does.
func (tb *thunderbird) key(keys ...string) {
	tb.t.Helper()
	xdo(tb.t, tb.display, append([]string{"key", "--clearmodifiers", "--delay", "100"}, keys...)...)
}

// clickFirstMessage clicks the first message of the list, the way a user
// opens a voicemail: in the default three-pane layout at this window size
// the first message card sits at (440, 138).
func (tb *thunderbird) clickFirstMessage() {
	tb.t.Helper()
	xdo(tb.t, tb.display, "mousemove", "--window", tb.window, "440", "138", "click", "1")
}

// A server line Thunderbird read, and a command it sent, on the connection
// that has INBOX selected.
const (
	tbRead = `S-INBOX:CreateNewLineFromSocket: `
	tbSent = `S-INBOX:SendData: \d+ `
)

// lastSent returns the last command Thunderbird sent on its INBOX
// connection in log, without its tag.
func lastSent(log string) string {
	sent := regexp.MustCompile(tbSent+`([^\n]*)`).FindAllStringSubmatch(log, -1)
	if len(sent) == 0 {
		return ""
	}
	return strings.TrimSpace(sent[len(sent)-1][1])
}

// TestThunderbird drives Thunderbird, on a private X display, through what a
// user does with voicemail in it, and checks each step on the phone side.
func TestThunderbird(t *testing.T) {
	d := startDemo(t)
	d.call("deposit " + testUser + " 5551234 Alice Smith")
	d.call("urgent " + testUser + " +4930123456 Bob Jones")
	tb := startThunderbird(t, d, false)
	log := tb.log

	// Deposits appear: Thunderbird logs in with the saved password over the
	// certificate exception, lists both voicemails and idles in INBOX.
	at, _ := log.wait(0, tbRead+`Subject: Voice message from Alice Smith \(5551234\), 0:03`)
	at, _ = log.wait(0, tbRead+`Subject: Voice message from Bob Jones \(\+4930123456\), 0:03`)
	tb.findWindow()
	at, _ = log.wait(at, tbSent+`IDLE`)

	// A deposit while Thunderbird idles is pushed to it.
	d.call("deposit " + testUser + " 5550001 Carol")
	at, _ = log.wait(at, tbRead+`\* 3 EXISTS`)
	at, _ = log.wait(at, tbRead+`Subject: Voice message from Carol \(5550001\)`)
	d.forget()

	// Opening a voicemail marks it heard and the lamp follows.
	tb.clickFirstMessage()
	at, _ = log.wait(at, tbSent+`UID fetch 1 \(UID RFC822.SIZE BODY\[\]\)`)
	d.lamp("on 2/1 (1/0)")

	// The phone's "heard" is pushed to Thunderbird while it idles: an
	// unsolicited FETCH on the connection whose last command was IDLE.
	// (\Recent where that connection is the one that took the message as
	// recent, which the server leaves to whichever selected INBOX first.)
	at, _ = log.wait(at, tbSent+`IDLE`)
	d.call("heard " + testUser + " 2")
	d.lamp("on 1/2 (0/1)")
	at, _ = log.wait(at, tbRead+`\* 2 FETCH \(UID 2 FLAGS \(\\Seen \\Flagged( \\Recent)?\)\)`)
	if last := lastSent(log.text()[:at]); last != "IDLE" {
		t.Errorf("the phone's heard reached Thunderbird after it sent %q, want while it idled (after IDLE)", last)
	}

	// Mark as Unread (m) lights the lamp again; the star (s) is the urgency.
	d.forget()
	tb.key("m")
	at, _ = log.wait(at, `uid store 1 -Flags \(\\Seen\)`)
	d.lamp("on 2/1 (0/1)")
	tb.key("s")
	at, _ = log.wait(at, `uid store 1 \+Flags \(\\Flagged\)`)
	d.lamp("on 2/1 (1/1)")
	d.expectList("list "+testUser,
		"1 new urgent 5551234 3s Alice Smith",
		"2 heard urgent +4930123456 3s Bob Jones",
		"3 new 5550001 3s Carol")

	// Delete moves the message to Trash. Thunderbird marks it read just
	// before, which does not count: it waits in Trash unheard.
	tb.key("Delete")
	at, _ = log.wait(at, `uid move 1 "Trash"`)
	d.lamp("on 1/1 (0/1)")
	d.expectList("list "+testUser+" Trash", "1 new urgent 5551234 3s Alice Smith")
	d.expectList("list "+testUser,
		"2 heard urgent +4930123456 3s Bob Jones",
		"3 new 5550001 3s Carol")

	// Undo (Ctrl+Z) moves it back from Trash: unheard, the lamp relights.
	tb.key("ctrl+z")
	at, _ = log.wait(at, `S-Trash:SendData: \d+ uid move 1 "INBOX"`)
	d.lamp("on 2/1 (1/1)")
	at, _ = log.wait(at, tbRead+`\* 3 EXISTS`)
	// Thunderbird may fetch the header again (a FETCH of UID 4's flags and
	// header) or take it from its own copy, since MOVE's COPYUID named the
	// message's new UID (4), with no FETCH of UID 4 at all; which one
	// depends on whether the MOVE's answer came before INBOX's FETCH. The
	// select-all below moves UID 4, which shows it is in Thunderbird's view.
	// Either way its round of updates ends when INBOX's connection idles
	// again, after the EXISTS: a key pressed before that lands in a message
	// list that is still changing, and a Delete there leaves nothing
	// displayed after it.
	at, _ = log.wait(at, tbSent+`IDLE`)

	// Deleting Bob's (heard) makes Thunderbird display the next one,
	// Carol's, which marks it read: that display is not a play, the lamp
	// stays lit for it and Thunderbird is told it is unread.
	d.forget()
	tb.key("Home", "Delete")
	at, _ = log.wait(at, `uid move 2 "Trash"`)
	d.lamp("on 2/0 (1/0)")
	at, _ = log.wait(at, tbRead+`\* \d+ FETCH \(UID 3 FLAGS \((\\Recent)?\)\)`)
	d.expectList("list "+testUser,
		"3 new 5550001 3s Carol",
		"4 new urgent 5551234 3s Alice Smith")

	// Select all and Delete empties INBOX into Trash in one move; what was
	// unheard stays unheard.
	d.forget()
	tb.key("ctrl+a", "Delete")
	at, _ = log.wait(at, `uid move 3:4 "Trash"`)
	d.lamp("off 0/0 (0/0)")
	d.expectList("list " + testUser)
	d.expectList("list "+testUser+" Trash",
		"2 heard urgent +4930123456 3s Bob Jones",
		"3 new 5550001 3s Carol",
		"4 new urgent 5551234 3s Alice Smith")
	_ = at
}

// TestThunderbirdStartTLS checks the account on the STARTTLS port once the
// certificate exception is stored: Thunderbird logs in after STARTTLS, lists
// the voicemail, and opening it is heard.
func TestThunderbirdStartTLS(t *testing.T) {
	d := startDemo(t)
	d.call("deposit " + testUser + " 5551234 Alice Smith")
	tb := startThunderbird(t, d, true)
	at, _ := tb.log.wait(0, `SendData: \d+ STARTTLS`)
	at, _ = tb.log.wait(at, tbRead+`Subject: Voice message from Alice Smith \(5551234\), 0:03`)
	tb.findWindow()
	at, _ = tb.log.wait(at, tbSent+`IDLE`)
	d.forget()
	tb.clickFirstMessage()
	tb.log.wait(at, tbSent+`UID fetch 1 \(UID RFC822.SIZE BODY\[\]\)`)
	d.lamp("off 0/1 (0/0)")
}
