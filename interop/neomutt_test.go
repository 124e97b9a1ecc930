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
)

// muttrc is neomutt's configuration for the demo's mailbox 1001 over
// implicit TLS, trusting the demo's certificate, idling in INBOX, with an
// index line that shows each message's flags: "N" new (unheard), "!"
// flagged (urgent), "D" deleted.
const muttrc = `set folder = "imaps://%[1]s@127.0.0.1:%[2]s/"
set imap_pass = "%[3]s"
set spoolfile = "+INBOX"
set trash = "+Trash"
set record = ""
set postponed = ""
set certificate_file = "%[4]s"
set ssl_verify_host = yes
set imap_idle = yes
set mail_check = 1
set timeout = 1
set header_cache = ""
set message_cachedir = ""
set mark_old = no
set delete = yes
set quit = yes
set wait_key = no
set confirmappend = no
set sort = date
set index_format = "%%4C [%%Z] %%-16.16n %%s"
set pager_index_lines = 0
set help = no
set resolve = no
`

// screen is a terminal program running in a tmux session of its own.
type screen struct {
	t      *testing.T
	tmux   string
	socket string
}

func startScreen(t *testing.T, env []string, args ...string) *screen {
	t.Helper()
	s := &screen{t: t, tmux: program(t, "tmux", "tmux"), socket: filepath.Join(t.TempDir(), "tmux")}
	cmd := exec.Command(s.tmux, append([]string{"-S", s.socket, "-f", "/dev/null", "new-session", "-d", "-x", "160", "-y", "40", "--"}, args...)...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	// The tmux server leaves our process group; it goes with its session.
	t.Cleanup(func() { exec.Command(s.tmux, "-S", s.socket, "kill-server").Run() })
	return s
}

func (s *screen) text() string {
	out, err := exec.Command(s.tmux, "-S", s.socket, "capture-pane", "-p").Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// wait waits until the screen matches re and returns the submatches.
func (s *screen) wait(re string) []string {
	s.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(waitFor)
	for {
		text := s.text()
		if m := rx.FindStringSubmatch(text); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the screen never matched %q; it shows:\n%s", re, text)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// keys types keys, in tmux's send-keys notation (Enter, q, ...).
func (s *screen) keys(keys ...string) {
	s.t.Helper()
	if out, err := exec.Command(s.tmux, append([]string{"-S", s.socket, "send-keys"}, keys...)...).CombinedOutput(); err != nil {
		s.t.Fatalf("tmux send-keys %q: %v\n%s", keys, err, out)
	}
}

// TestNeomutt drives neomutt in a terminal through what a user does with
// voicemail in it, reading its screen and the phone side.
func TestNeomutt(t *testing.T) {
	nm := program(t, "neomutt", "neomutt")
	d := startDemo(t)
	d.call("deposit " + testUser + " 5551234 Alice Smith")
	d.call("urgent " + testUser + " +4930123456 Bob Jones")
	home := t.TempDir()
	rc := filepath.Join(home, "muttrc")
	if err := os.WriteFile(rc, []byte(fmt.Sprintf(muttrc, testUser, d.port(d.imaps), demoPass, d.certFile())), 0o600); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "HOME="+home, "TERM=xterm-256color", "LANG=C.UTF-8")
	s := startScreen(t, env, nm, "-n", "-F", rc)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("neomutt's screen:\n%s", s.text())
		}
	})

	// Deposits appear, unheard, the urgent one flagged.
	s.wait(`1 \[N\s*\] Alice Smith\s+Voice message from Alice Smith`)
	s.wait(`2 \[N\s*!\] Bob Jones\s+Voice message from Bob Jones`)
	// One more arrives while neomutt idles.
	d.call("deposit " + testUser + " 5550001 Carol")
	s.wait(`3 \[N\s*\] Carol\s+Voice message from Carol`)
	d.forget()

	// Opening the first marks it read in neomutt, which tells the server
	// when it syncs ($): the voicemail is heard and the lamp follows.
	s.keys("Enter")
	s.wait(`Caller: Alice Smith`)
	s.keys("q", "$")
	s.wait(`1 \[\s*\] Alice Smith`)
	d.lamp("on 2/1 (1/0)")

	// The phone's heard reaches the index.
	d.call("heard " + testUser + " 2")
	d.lamp("on 1/2 (0/1)")
	s.wait(`2 \[\s*!\] Bob Jones`)

	// Mark as new (N) and flag (F) the first, then sync ($).
	s.keys("1", "Enter", "N", "F", "$")
	d.lamp("on 2/1 (1/1)")
	d.expectList("list "+testUser,
		"1 new urgent 5551234 3s Alice Smith",
		"2 heard urgent +4930123456 3s Bob Jones",
		"3 new 5550001 3s Carol")

	// Delete (d) and sync: the message goes to Trash, still unheard.
	s.keys("1", "Enter", "d", "$")
	d.lamp("on 1/1 (0/1)")
	// The sync has ended when the index is renumbered without it.
	s.wait(`1 \[\s*!\] Bob Jones`)
	d.expectList("list "+testUser,
		"2 heard urgent +4930123456 3s Bob Jones",
		"3 new 5550001 3s Carol")
	trash := d.call("list " + testUser + " Trash")
	if len(trash) != 2 || !strings.HasSuffix(trash[1], " new urgent 5551234 3s Alice Smith") {
		t.Errorf("list Trash = %q, want Alice's voicemail, new and urgent", trash)
	}
	s.keys("q")
}
