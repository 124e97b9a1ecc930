package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/smtptest"
	"github.com/embeddedum/um/internal/testwait"
)

// mailSink is the test SMTP submission server, accepting mail from pbx
// with password smtppw9, with its certificate in caFile for -smtp-ca.
type mailSink struct {
	*smtptest.Server
	caFile string
}

func startMailSink(t testing.TB) *mailSink {
	t.Helper()
	s := &mailSink{Server: smtptest.Start(t, "pbx", "smtppw9"), caFile: filepath.Join(t.TempDir(), "smtp-ca.pem")}
	if err := os.WriteFile(s.caFile, s.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestForward runs the PBX with mailbox 1001 forwarded by e-mail: a deposit
// on the phone arrives at the SMTP server, addressed to the -forward
// address, as the rendered voicemail. The password given in -smtp gets a
// warning and is never printed.
func TestForward(t *testing.T) {
	sink := startMailSink(t)
	bin := buildPBX(t)
	addr := freeAddr(t)
	p := startPBX(t, bin, t.TempDir(), "-user", "1001:secret1", "-user", "1002:secret2",
		"-forward", "1001=Bob <bob@example.com>", "-smtp", "smtp://pbx:smtppw9@"+sink.Addr, "-smtp-ca", sink.caFile,
		"-forward-from", "voicemail@pbx.example.com", "-http", addr)
	p.send("deposit 1002 5550000 Not Forwarded")
	p.expect("MWI 1002 on 1/0 (0/0)", "ok 1")
	p.send("deposit 1001 5551234 Alice")
	p.expect("MWI 1001 on 1/0 (0/0)", "ok 1")
	deadline := time.Now().Add(wait)
	for len(sink.Messages()) == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	got := sink.Messages()
	if len(got) != 1 {
		t.Fatalf("the SMTP server got %d messages, want the one deposit of 1001; stderr:\n%s", len(got), p.stderr)
	}
	data := string(got[0].Data)
	if got[0].To != "bob@example.com" || !strings.Contains(data, "X-Um-Message-Id: ") ||
		!strings.Contains(data, "5551234") || !strings.Contains(data, "Content-Type: audio/wav") {
		t.Fatalf("forwarded message to %q:\n%.600s", got[0].To, data)
	}
	// The console and /metrics show the forwarding, and that this node
	// holds it.
	testwait.Until(t, wait, 20*time.Millisecond, "the console to count the message sent", func() bool {
		st := mailboxStatus(t, addr, "1001")
		return st != nil && st.Sent == 1
	})
	if st := mailboxStatus(t, addr, "1001"); st.Mode != "forward" || !st.Owned || st.Owner != "local" || st.Pending {
		t.Errorf("console status of 1001 = %+v, want forwarding owned by this node (local), nothing pending", st)
	}
	if st := mailboxStatus(t, addr, "1002"); st != nil {
		t.Errorf("console status of 1002, not forwarded = %+v, want none", st)
	}
	if got := value(t, scrape(t, addr), "um_forward_sent_total", "mailbox=1001"); got != 1 {
		t.Errorf("um_forward_sent_total{mailbox=1001} = %v, want 1", got)
	}
	p.stdin.Close()
	p.waitExit()
	stderr := p.stderr.String()
	if !strings.Contains(stderr, "warning: the password of -smtp is on the command line") {
		t.Errorf("no warning about the -smtp password in argv; stderr:\n%s", stderr)
	}
	if strings.Contains(stderr, "smtppw9") {
		t.Errorf("stderr holds the SMTP password:\n%s", stderr)
	}
	if !strings.Contains(stderr, "mailbox 1001 forwarded by e-mail to") {
		t.Errorf("the banner does not say 1001 is forwarded; stderr:\n%s", stderr)
	}

	// Both modes for one mailbox: refused at start, saying why.
	cmd := exec.Command(bin, "-data", t.TempDir(), "-http", "", "-forward", "1001=bob@example.com",
		"-smtp", "smtp://pbx:smtppw9@"+sink.Addr, "-upstream", "1001=imaps://alice:pw@127.0.0.1:1")
	out, err := cmd.CombinedOutput()
	want := "pbx: mailbox 1001 is given to -forward and -upstream: a mailbox is forwarded by e-mail or mirrored into a mail account, not both\n"
	if err == nil || string(out) != want {
		t.Errorf("pbx with -forward and -upstream of 1001: %v, output %q; want exit status 1 and %q", err, out, want)
	}
}

// TestForwardFlags: -forward needs an SMTP server, -smtp needs a mailbox to
// forward, a mailbox cannot be forwarded and mirrored, and whatever is
// wrong with an -smtp URL, the error does not repeat its password.
func TestForwardFlags(t *testing.T) {
	c, err := parseFlags([]string{"-forward", "1001=bob@example.com", "-smtp", "smtps://pbx%40example.com:s3cret@mail.example.com"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.smtp.addr != "mail.example.com:465" || c.smtp.user != "pbx@example.com" || c.smtp.password != "s3cret" || !c.smtpArgvSecret || c.forwardFrom != "pbx@example.com" {
		t.Errorf("parsed -smtp = %+v, from %q, argv secret %v", c.smtp, c.forwardFrom, c.smtpArgvSecret)
	}
	file := writeFile(t, "# the relay\nsmtp://relay.example.com\n", 0o600)
	c, err = parseFlags([]string{"-forward", "1001=bob@example.com", "-smtp-file", file}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.smtp.addr != "relay.example.com:587" || c.smtp.user != "" || c.smtpArgvSecret || c.forwardFrom != "voicemail@localhost" {
		t.Errorf("parsed -smtp-file = %+v, from %q, argv secret %v", c.smtp, c.forwardFrom, c.smtpArgvSecret)
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no server", []string{"-forward", "1001=bob@example.com"}, "-forward needs the SMTP server"},
		{"no mailbox", []string{"-smtp", "smtp://h"}, "-smtp without -forward"},
		{"both modes", []string{"-forward", "1001=bob@example.com", "-smtp", "smtp://h", "-upstream", "1001=imaps://a:s3cret@h"}, "mailbox 1001 is given to -forward and -upstream"},
		{"bad address", []string{"-forward", "1001=not an address", "-smtp", "smtp://h"}, "mailbox 1001: address"},
		{"no address", []string{"-forward", "1001", "-smtp", "smtp://h"}, "want BOX=ADDRESS"},
		{"twice", []string{"-forward", "1001=a@example.com", "-forward", "1001=b@example.com", "-smtp", "smtp://h"}, "given twice"},
		{"scheme", []string{"-forward", "1001=a@example.com", "-smtp", "http://a:s3cret@h"}, `scheme "http"`},
		{"malformed", []string{"-forward", "1001=a@example.com", "-smtp", "smtp://a:s3cret@[::1"}, "malformed URL"},
		{"user without password", []string{"-forward", "1001=a@example.com", "-smtp", "smtp://s3cret@h"}, "want USER:PASSWORD@"},
		{"no host", []string{"-forward", "1001=a@example.com", "-smtp", "smtp://a:s3cret@"}, "no host"},
		{"path", []string{"-forward", "1001=a@example.com", "-smtp", "smtp://a:s3cret@h/x"}, "no path"},
		{"url and file", []string{"-forward", "1001=a@example.com", "-smtp", "smtp://h", "-smtp-file", file}, "give one"},
		{"file readable by others", []string{"-forward", "1001=a@example.com", "-smtp-file", writeFile(t, "smtp://a:s3cret@h\n", 0o644)}, "chmod 600"},
		{"bad URL in file", []string{"-forward", "1001=a@example.com", "-smtp-file", writeFile(t, "smtps://a:s3cret@\n", 0o600)}, "no host"},
		{"two URLs in file", []string{"-forward", "1001=a@example.com", "-smtp-file", writeFile(t, "smtp://h\nsmtp://a:s3cret@h\n", 0o600)}, "want one URL"},
		{"bad from", []string{"-forward", "1001=a@example.com", "-smtp", "smtp://h", "-forward-from", "nobody"}, "-forward-from"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(tc.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseFlags(%q) = %v, want an error with %q", tc.args, err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("parseFlags() = %q: the error repeats the password", err)
			}
		})
	}
}

// TestForwardModeAcrossNodesAndRuns: two nodes on one PostgreSQL. A
// mailbox node a forwards cannot be mirrored by node b, even once a has
// stopped: the store keeps a's claim, and b's error says which mode holds
// it. The flags are a node's configuration: a run of a that no longer
// forwards the mailbox releases a's claim, and b may mirror it then.
func TestForwardModeAcrossNodesAndRuns(t *testing.T) {
	sink := startMailSink(t)
	dsn := startPostgres(t)
	nodeA := []string{"-user", "1001:secret1", "-pg", dsn, "-node", "a"}
	fwd := append(nodeA, "-forward", "1001=bob@example.com", "-smtp", "smtp://pbx:smtppw9@"+sink.Addr, "-smtp-ca", sink.caFile)
	runScript(t, t.TempDir(), "deposit 1001 5551234\n", fwd...)

	mirror := []string{"-data", t.TempDir(), "-imap", "127.0.0.1:0", "-imaps", "127.0.0.1:0", "-http", "",
		"-user", "1001:secret1", "-pg", dsn, "-node", "b", "-upstream", "1001=imaps://alice:pw@127.0.0.1:1"}
	var out, errOut bytes.Buffer
	err := run(context.Background(), mirror, strings.NewReader(""), &out, &errOut)
	if !errors.Is(err, um.ErrModeConflict) || !strings.Contains(err.Error(), "email-forward") {
		t.Fatalf("node b mirroring a mailbox node a forwards: run() = %v, want an error wrapping ErrModeConflict naming email-forward", err)
	}

	_, stderr := runScript(t, t.TempDir(), "", nodeA...)
	if !strings.Contains(stderr, "mailbox 1001 is no longer given to -forward here") {
		t.Errorf("a run of a without -forward 1001 did not say it released the claim; stderr:\n%s", stderr)
	}
	out.Reset()
	errOut.Reset()
	if err := run(context.Background(), mirror, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("node b mirroring once a dropped forwarding: run() = %v; stderr:\n%s", err, errOut.String())
	}
}

// answer returns the next line of p's output that is not a lamp change.
func answer(p *pbxProc) string {
	p.t.Helper()
	for {
		if line := p.next(); !strings.HasPrefix(line, "MWI ") {
			return line
		}
	}
}

// TestForwardTwoNodes runs two PBX nodes on one PostgreSQL, both
// forwarding 1001, the account in -smtp-file: voicemail deposited on
// either node is sent once, by the one node that holds the mailbox's
// lease.
func TestForwardTwoNodes(t *testing.T) {
	sink := startMailSink(t)
	dsn := startPostgres(t)
	bin := buildPBX(t)
	file := writeFile(t, "smtp://pbx:smtppw9@"+sink.Addr+"\n", 0o600)
	args := func(node string) []string {
		return []string{"-user", "1001:secret1", "-pg", dsn, "-node", node,
			"-forward", "1001=bob@example.com", "-smtp-file", file, "-smtp-ca", sink.caFile}
	}
	a := startPBX(t, bin, t.TempDir(), args("a")...)
	b := startPBX(t, bin, t.TempDir(), args("b")...)
	waitListening(t, dsn, "a", "b")
	callers := []string{"5551111", "5552222", "5553333"}
	for i, caller := range callers {
		p := []*pbxProc{a, b}[i%2]
		p.send("deposit 1001 " + caller)
		if got := answer(p); !strings.HasPrefix(got, "ok ") {
			t.Fatalf("deposit on node %c = %q", "ab"[i%2], got)
		}
	}
	deadline := time.Now().Add(wait)
	for len(sink.Messages()) < len(callers) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // a copy sent twice would show by now
	got := sink.Messages()
	for _, caller := range callers {
		n := 0
		for _, m := range got {
			if strings.Contains(string(m.Data), "X-CallingTelephoneNumber: "+caller) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("voicemail from %s forwarded %d times, want once", caller, n)
		}
	}
	if len(got) != len(callers) {
		t.Errorf("the SMTP server got %d messages, want %d", len(got), len(callers))
	}
	for _, p := range []*pbxProc{a, b} {
		p.stdin.Close()
		// The other node's lamp changes may still be arriving.
		for line := range p.lines {
			if !strings.HasPrefix(line, "MWI 1001 ") {
				t.Errorf("unexpected output line %q", line)
			}
		}
		p.waitExit()
	}
	takers := 0
	for _, p := range []*pbxProc{a, b} {
		s := p.stderr.String()
		if strings.Contains(s, `msg="lease taken" mailbox=1001 purpose=forward`) {
			takers++
		}
		if strings.Contains(s, "warning") || strings.Contains(s, "smtppw9") {
			t.Errorf("stderr has a warning or the password:\n%s", s)
		}
	}
	if takers < 1 {
		t.Errorf("no node logged taking 1001's forwarding lease")
	}
}
