package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um/internal/testwait"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// freeSIPPort returns a loopback port free for UDP and TCP, whose next port
// is free for TCP too (baresip listens for TLS one above its SIP port).
func freeSIPPort(t testing.TB) int {
	t.Helper()
	for range 50 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		ok := true
		for _, p := range []int{port, port + 1} {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no free SIP port")
	return 0
}

// baresip is the softphone running as a process, subscribed to its lamp.
type baresip struct {
	cmd    *exec.Cmd
	out    *testwait.Buffer
	exited chan struct{}
}

func startBaresip(t *testing.T, pbxSIP, box, uriParams string) *baresip {
	t.Helper()
	bin, err := exec.LookPath("baresip")
	if err != nil {
		t.Fatal("baresip is missing (Debian package baresip; scripts/test.sh installs it): ", err)
	}
	dir := t.TempDir()
	own := freeSIPPort(t)
	config := fmt.Sprintf("sip_listen\t127.0.0.1:%d\nmodule_path\t/usr/lib/baresip/modules\n"+
		"module\tg711.so\nmodule\taccount.so\nmodule\tmenu.so\nmodule\tmwi.so\n"+
		"audio_player\tnil\naudio_source\tnil\n", own)
	// mwi=yes: subscribe to message-summary once registered.
	accounts := fmt.Sprintf("<sip:%s@%s%s>;regint=600;mwi=yes\n", box, pbxSIP, uriParams)
	for name, text := range map[string]string{"config": config, "accounts": accounts} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := &baresip{out: new(testwait.Buffer), exited: make(chan struct{})}
	b.cmd = exec.Command(bin, "-f", dir)
	b.cmd.Stdout = b.out
	b.cmd.Stderr = b.out
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.cmd.Wait(); close(b.exited) }()
	t.Cleanup(func() {
		b.cmd.Process.Kill()
		<-b.exited
	})
	return b
}

// summaries returns the message-summary bodies baresip printed so far.
func (b *baresip) summaries() []string {
	var out []string
	for _, part := range strings.Split(b.out.String(), "----- MWI for ")[1:] {
		_, body, _ := strings.Cut(part, "\n")
		// baresip prints the body as it came, then a line end of its own,
		// in a write after the header's: a body without that end is still
		// being printed, and so is every summary after it.
		body, _, complete := strings.Cut(body, "\n\n")
		if !complete {
			break
		}
		out = append(out, body+"\n")
	}
	return out
}

// waitSummary waits until baresip has printed n summaries and returns the
// last.
func (b *baresip) waitSummary(t *testing.T, n int) string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		if s := b.summaries(); len(s) >= n {
			return s[n-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("baresip printed %d MWI summaries within %v, want %d; its log:\n%s", len(b.summaries()), wait, n, b.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestBaresipLamp subscribes baresip, a real softphone, to mailbox 1001 of
// the demo, over UDP and over TCP: its lamp goes on after a deposit made
// from the phone commands and off after a mail client marks the message
// read over IMAP.
func TestBaresipLamp(t *testing.T) {
	bin := buildPBX(t)
	for _, tc := range []struct{ name, params string }{{"udp", ""}, {"tcp", ";transport=tcp"}} {
		t.Run(tc.name, func(t *testing.T) { testBaresipLamp(t, bin, tc.params) })
	}
}

func testBaresipLamp(t *testing.T, bin, uriParams string) {
	dir := t.TempDir()
	sipAddr := "127.0.0.1:" + strconv.Itoa(freeSIPPort(t))
	p := startPBX(t, bin, dir, "-user", "1001:secret1", "-sip", sipAddr)
	phone := startBaresip(t, sipAddr, "1001", uriParams)

	summary := func(waiting, counts string) string {
		return "Messages-Waiting: " + waiting + "\r\nMessage-Account: sip:1001@127.0.0.1\r\nVoice-Message: " + counts + "\r\n"
	}
	if got, want := phone.waitSummary(t, 1), summary("no", "0/0 (0/0)"); got != want {
		t.Fatalf("baresip's first MWI = %q, want %q", got, want)
	}

	p.send("deposit 1001 5551234 Alice")
	p.expect("MWI 1001 on 1/0 (0/0)", "ok 1")
	if got, want := phone.waitSummary(t, 2), summary("yes", "1/0 (0/0)"); got != want {
		t.Fatalf("baresip's MWI after the deposit = %q, want %q", got, want)
	}

	c, err := imapclient.DialStartTLS(p.imap, &imapclient.Options{TLSConfig: tlsConfig(t, dir)})
	if err != nil {
		t.Fatalf("STARTTLS connection: %v", err)
	}
	defer c.Close()
	if err := c.Login("1001", "secret1").Wait(); err != nil {
		t.Fatalf("LOGIN: %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("SELECT INBOX: %v", err)
	}
	store := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}
	if err := c.Store(imap.UIDSetNum(1), store, nil).Close(); err != nil {
		t.Fatalf("UID STORE +FLAGS \\Seen: %v", err)
	}
	p.expect("MWI 1001 off 0/1 (0/0)")
	if got, want := phone.waitSummary(t, 3), summary("no", "0/1 (0/0)"); got != want {
		t.Fatalf("baresip's MWI after the mail client read the message = %q, want %q", got, want)
	}
	c.Logout().Wait()

	// End of input: the PBX ends the subscription (terminated) and exits.
	p.stdin.Close()
	p.waitExit()
	deadline := time.Now().Add(wait)
	for !strings.Contains(phone.out.String(), "mwi: subscription for sip:1001@"+sipAddr+" closed") {
		if time.Now().After(deadline) {
			t.Fatalf("baresip did not see its subscription end; its log:\n%s", phone.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSIPBusy: an -sip address taken by another program stops the demo
// with an error before it serves anything.
func TestSIPBusy(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	var out, errOut bytes.Buffer
	args := []string{"-data", t.TempDir(), "-imap", "127.0.0.1:0", "-imaps", "127.0.0.1:0", "-http", "", "-sip", busy.LocalAddr().String()}
	if err := run(context.Background(), args, strings.NewReader(""), &out, &errOut); err == nil || !strings.Contains(err.Error(), "sip:") {
		t.Errorf("run with a busy -sip address = %v, want a sip: error", err)
	}
	if out.Len() != 0 {
		t.Errorf("run wrote %q to standard output, want nothing", out.String())
	}
}

// TestMWINotifyContact: with -mwi-notify, a phone that never subscribes
// (SIPp, answering NOTIFYs) gets the mailbox's state at start and again on
// the deposit.
func TestMWINotifyContact(t *testing.T) {
	sipp, err := exec.LookPath("sipp")
	if err != nil {
		t.Fatal("SIPp is missing (Debian package sip-tester; scripts/test.sh installs it): ", err)
	}
	port := freeSIPPort(t)
	dir := t.TempDir()
	scenario, err := filepath.Abs("../../sipmwi/testdata/unsolicited.xml")
	if err != nil {
		t.Fatal(err)
	}
	trace := filepath.Join(dir, "messages.log")
	cmd := exec.Command(sipp, "-sf", scenario, "-m", "2", "-i", "127.0.0.1", "-p", strconv.Itoa(port),
		"-trace_msg", "-message_file", trace, "-timeout", "60s", "-timeout_error", "-nostdin")
	cmd.Dir = dir
	var sout testwait.Buffer
	cmd.Stdout, cmd.Stderr = &sout, &sout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	// SIPp listens once its port is taken.
	deadline := time.Now().Add(wait)
	for {
		c, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("SIPp did not listen on %d; its output:\n%s", port, sout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	bin := buildPBX(t)
	p := startPBX(t, bin, t.TempDir(), "-user", "1001:secret1", "-mwi-notify", fmt.Sprintf("1001=sip:1001@127.0.0.1:%d", port))
	p.send("deposit 1001 5551234 Alice")
	p.expect("MWI 1001 on 1/0 (0/0)", "ok 1")
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("SIPp: %v\n%s", err, sout.String())
		}
	case <-time.After(wait):
		t.Fatalf("SIPp did not get two NOTIFYs within %v:\n%s", wait, sout.String())
	}
	log, _ := os.ReadFile(trace)
	for _, want := range []string{"Messages-Waiting: no", "Messages-Waiting: yes", "Voice-Message: 1/0 (0/0)"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("SIPp received no NOTIFY with %q; its trace:\n%s", want, log)
		}
	}
	if i, j := strings.Index(string(log), "Messages-Waiting: no"), strings.Index(string(log), "Messages-Waiting: yes"); i > j {
		t.Errorf("the lamp went on before the start state was sent; trace:\n%s", log)
	}
}
