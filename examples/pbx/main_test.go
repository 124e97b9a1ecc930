package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um/wav"
)

// runScript runs the PBX in-process on dir with script as standard input,
// until the script ends, and returns what it wrote to standard output and
// standard error.
func runScript(t testing.TB, dir, script string, args ...string) (stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	all := append([]string{"-data", dir, "-imap", "127.0.0.1:0", "-imaps", "127.0.0.1:0", "-http", ""}, args...)
	if err := run(context.Background(), all, strings.NewReader(script), &out, &errOut); err != nil {
		t.Fatalf("run(%q) = %v; stderr:\n%s", all, err, errOut.String())
	}
	return out.String(), errOut.String()
}

var twoUsers = []string{"-user", "1001:secret1", "-user", "1002:secret2"}

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	script := `
# comments and blank lines get no answer
mwi 1001
deposit 1001 5551234 Alice Smith
urgent 1001 +4930123456
deposit 1002 5550000
list 1001
heard 1001 1
heard 1001 1
unheard 1001 1
heard 1001 2
mwi 1001
delete 1001 1
list 1001
list 1001 Trash
list 1001 trash
undelete 1001 1
list 1001
list 1002 INBOX
delete 1001 2
delete 1001 3
mwi 1001
mwi 1002
`
	want := `ok 0/0 (0/0)
MWI 1001 on 1/0 (0/0)
ok 1
MWI 1001 on 2/0 (1/0)
ok 2
MWI 1002 on 1/0 (0/0)
ok 1
ok 2
1 new 5551234 3s Alice Smith
2 new urgent +4930123456 3s
MWI 1001 on 1/1 (1/0)
ok
ok
MWI 1001 on 2/0 (1/0)
ok
MWI 1001 on 1/1 (0/1)
ok
ok 1/1 (0/1)
MWI 1001 off 0/1 (0/1)
ok
ok 1
2 heard urgent +4930123456 3s
ok 1
1 new 5551234 3s Alice Smith
`
	// "list 1001 trash" names no folder: only INBOX is case-insensitive.
	want += `error: mailbox 1001 has no folder "trash"
MWI 1001 on 1/1 (0/1)
ok 3
ok 2
2 heard urgent +4930123456 3s
3 new 5551234 3s Alice Smith
ok 1
1 new 5550000 3s
MWI 1001 on 1/0 (0/0)
ok
MWI 1001 off 0/0 (0/0)
ok
ok 0/0 (0/0)
ok 1/0 (0/0)
`
	got, _ := runScript(t, dir, script, twoUsers...)
	if got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

// TestBadInput checks that every malformed or impossible command answers
// one "error: " line and changes nothing.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	notWAV := filepath.Join(dir, "notes.wav")
	if err := os.WriteFile(notWAV, []byte("this is not audio"), 0o644); err != nil {
		t.Fatal(err)
	}
	noData := filepath.Join(dir, "nodata.wav")
	if err := os.WriteFile(noData, wav.Tone(time.Second)[:36], 0o644); err != nil {
		t.Fatal(err)
	}
	bad := []string{
		"frobnicate 1001",
		"DEPOSIT 1001 555",
		"deposit",
		"deposit 1001",
		"deposit 1009 555",
		"urgent 1001",
		"urgent 1009 555",
		"deposit-file 1001 555",
		"deposit-file 1009 555 " + notWAV,
		"deposit-file 1001 555 " + filepath.Join(dir, "missing.wav"),
		"deposit-file 1001 555 " + notWAV,
		"deposit-file 1001 555 " + noData,
		"list",
		"list 1009",
		"list 1001 Nope",
		"heard 1001",
		"heard 1001 x",
		"heard 1001 0",
		"heard 1001 -1",
		"heard 1001 4294967296",
		"heard 1001 99",
		"heard 1009 1",
		"heard 1001 1 2",
		"unheard 1001 99",
		"delete 1001 99",
		"delete 1002 1",
		"undelete 1001 1", // UID 1 is in INBOX, not in Trash
		"undelete 1001 99",
		"mwi",
		"mwi 1009",
		"mwi 1001 1002",
	}
	setup := "deposit 1001 5551234\n"
	check := "list 1001\nlist 1001 Trash\nmwi 1001\nmwi 1002\n"
	before, _ := runScript(t, t.TempDir(), setup+check, twoUsers...)

	got, _ := runScript(t, dir, setup+strings.Join(bad, "\n")+"\n"+check, twoUsers...)
	lines := strings.SplitAfter(got, "\n")
	// The setup's MWI line and answer, then one error per bad command.
	head := strings.Join(lines[:2], "")
	if want := "MWI 1001 on 1/0 (0/0)\nok 1\n"; head != want {
		t.Fatalf("setup output = %q, want %q", head, want)
	}
	for i, cmd := range bad {
		if line := lines[2+i]; !strings.HasPrefix(line, "error: ") || strings.Count(line, "\n") != 1 {
			t.Errorf("%q answered %q, want one \"error: ...\" line", cmd, line)
		}
	}
	after := strings.Join(lines[2+len(bad):], "")
	beforeCheck := strings.Join(strings.SplitAfter(before, "\n")[2:], "")
	if after != beforeCheck {
		t.Errorf("state after bad commands:\n%s\nwant as before:\n%s", after, beforeCheck)
	}
}

func TestErrorReasons(t *testing.T) {
	tests := []struct {
		cmd, want string
	}{
		{"nope", `error: unknown command "nope" (try help)`},
		{"deposit 1001", "error: usage: deposit BOX CALLER [NAME...]"},
		{"list 1009", "error: no mailbox 1009"},
		{"heard 1001 7", "error: no message with UID 7 in INBOX of 1001"},
		{"undelete 1001 7", "error: no message with UID 7 in Trash of 1001"},
		{"delete 1001 x", `error: bad UID "x": want a positive number`},
	}
	var script, want strings.Builder
	for _, tt := range tests {
		script.WriteString(tt.cmd + "\n")
		want.WriteString(tt.want + "\n")
	}
	got, _ := runScript(t, t.TempDir(), script.String(), twoUsers...)
	if got != want.String() {
		t.Errorf("output:\n%s\nwant:\n%s", got, want.String())
	}
}

func TestDepositFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "my message.wav")
	if err := os.WriteFile(name, append(wav.Header(16000, 5*2*16000), make([]byte, 5*2*16000)...), 0o644); err != nil {
		t.Fatal(err)
	}
	got, _ := runScript(t, dir, "deposit-file 1002 +15551234 "+name+"\nlist 1002\n", twoUsers...)
	want := "MWI 1002 on 1/0 (0/0)\nok 1\nok 1\n1 new +15551234 5s\n"
	if got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

func TestDefaultUsersKept(t *testing.T) {
	dir := t.TempDir()
	_, banner1 := runScript(t, dir, "mwi 1001\nmwi 1002\n")
	b, err := os.ReadFile(filepath.Join(dir, "passwords"))
	if err != nil {
		t.Fatal(err)
	}
	users := strings.Fields(string(b))
	if len(users) != 4 || users[0] != "1001" || users[2] != "1002" || len(users[1]) < 12 || users[1] == users[3] {
		t.Fatalf("passwords file = %q, want 1001 and 1002 with distinct passwords", b)
	}
	for _, s := range []string{"1001 / " + users[1], "1002 / " + users[3]} {
		if !strings.Contains(banner1, s) {
			t.Errorf("banner lacks %q:\n%s", s, banner1)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "passwords")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("passwords file mode = %v, %v; want 0600", fi.Mode(), err)
	}
	_, banner2 := runScript(t, dir, "")
	if !strings.Contains(banner2, "1001 / "+users[1]) {
		t.Errorf("second run changed the password:\n%s", banner2)
	}
}

func TestCertificate(t *testing.T) {
	dir := t.TempDir()
	_, banner1 := runScript(t, dir, "", twoUsers...)
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.Leaf
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("key = %T, want ECDSA P-256", leaf.PublicKey)
	}
	for _, host := range []string{"localhost", "127.0.0.1"} {
		if err := leaf.VerifyHostname(host); err != nil {
			t.Errorf("certificate not valid for %s: %v", host, err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost"}); err != nil {
		t.Errorf("certificate does not verify against itself: %v", err)
	}
	fp := fingerprint(c.Certificate[0])
	if !strings.Contains(banner1, fp) {
		t.Errorf("banner lacks fingerprint %s:\n%s", fp, banner1)
	}
	_, banner2 := runScript(t, dir, "", twoUsers...)
	if !strings.Contains(banner2, fp) {
		t.Errorf("second run has a new certificate; banner:\n%s", banner2)
	}

	// A certificate of one's own is served instead, and nothing is written.
	own := t.TempDir()
	if err := writeSelfSigned(filepath.Join(own, "c.pem"), filepath.Join(own, "k.pem")); err != nil {
		t.Fatal(err)
	}
	oc, err := tls.LoadX509KeyPair(filepath.Join(own, "c.pem"), filepath.Join(own, "k.pem"))
	if err != nil {
		t.Fatal(err)
	}
	dir2 := t.TempDir()
	_, banner3 := runScript(t, dir2, "", append(twoUsers, "-cert", filepath.Join(own, "c.pem"), "-key", filepath.Join(own, "k.pem"))...)
	if ofp := fingerprint(oc.Certificate[0]); !strings.Contains(banner3, ofp) {
		t.Errorf("banner lacks the given certificate's fingerprint %s:\n%s", ofp, banner3)
	}
	if _, err := os.Stat(filepath.Join(dir2, "cert.pem")); err == nil {
		t.Errorf("cert.pem written although -cert was given")
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-user", "1001"},
		{"-user", ":pw"},
		{"-user", "1001:"},
		{"-user", "10 01:pw"},
		{"-user", "1001:a", "-user", "1001:b"},
		{"-cert", "only-cert.pem"},
		{"-imap", "", "-imaps", ""},
		{"-node", "a"},
		{"-upstream", "1001=imaps://nobody@example.com"},
		{"-mwi-notify", "1001"},
		{"-mwi-notify", "=sip:1001@127.0.0.1"},
		{"-mwi-notify", "1001=mailto:a@example.com"},
		{"-mwi-notify", "1001=sip:"},
		{"-sip", "no-port"},
		{"-nope"},
		{"extra"},
	} {
		var out, errOut bytes.Buffer
		all := append([]string{"-data", t.TempDir(), "-imap", "127.0.0.1:0", "-imaps", "127.0.0.1:0", "-http", ""}, args...)
		if err := run(context.Background(), all, strings.NewReader(""), &out, &errOut); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
		if out.Len() != 0 {
			t.Errorf("run(%q) wrote %q to standard output, want nothing", args, out.String())
		}
	}
}

// TestCancel checks that the PBX stops when its context is done (a signal,
// in main) while the input is still open.
func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	stdoutR, stdoutW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"-data", t.TempDir(), "-imap", "127.0.0.1:0", "-imaps", "127.0.0.1:0", "-http", ""}, twoUsers...), stdinR, stdoutW, io.Discard)
		stdoutW.Close()
	}()
	lines := make(chan string)
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := stdoutR.Read(b)
			if n > 0 {
				lines <- string(b[:n])
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	io.WriteString(stdinW, "mwi 1001\n")
	if got := <-lines; got != "ok 0/0 (0/0)\n" {
		t.Fatalf("mwi answered %q", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run() after cancel = %v, want nil", err)
	}
}

// TestRestart checks that mailboxes, messages, UIDs and flags survive a
// restart on the same data directory.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	runScript(t, dir, "deposit 1001 5551234\nurgent 1001 5559999 Bob\nheard 1001 1\ndelete 1001 2\n", twoUsers...)
	got, _ := runScript(t, dir, "list 1001\nlist 1001 Trash\nmwi 1001\ndeposit 1001 5550000\n", twoUsers...)
	want := "ok 1\n1 heard 5551234 3s\nok 1\n1 new urgent 5559999 3s Bob\nok 0/1 (0/0)\nMWI 1001 on 1/1 (0/0)\nok 3\n"
	if got != want {
		t.Errorf("after restart:\n%s\nwant:\n%s", got, want)
	}
}

// TestDataInUse checks that a second PBX on the same data directory fails
// instead of sharing the store.
func TestDataInUse(t *testing.T) {
	dir := t.TempDir()
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	var out bytes.Buffer
	done := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		w := &signalWriter{w: &out, first: started}
		done <- run(context.Background(), append([]string{"-data", dir, "-imap", "127.0.0.1:0", "-imaps", "127.0.0.1:0", "-http", ""}, twoUsers...), stdinR, w, io.Discard)
	}()
	io.WriteString(stdinW, "mwi 1001\n")
	<-started
	var errOut bytes.Buffer
	err := run(context.Background(), append([]string{"-data", dir, "-imap", "127.0.0.1:0", "-imaps", "127.0.0.1:0", "-http", ""}, twoUsers...), strings.NewReader(""), io.Discard, &errOut)
	if err == nil {
		t.Errorf("second run on the same data directory = nil, want an error")
	}
	stdinW.Close()
	if err := <-done; err != nil {
		t.Errorf("first run = %v", err)
	}
}

// signalWriter closes first at its first write.
type signalWriter struct {
	w     io.Writer
	first chan struct{}
	once  sync.Once
}

func (s *signalWriter) Write(p []byte) (int, error) {
	s.once.Do(func() { close(s.first) })
	return s.w.Write(p)
}
