package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

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
	out    *lockedBuffer
	exited chan struct{}
}

func startBaresip(t *testing.T, pbxSIP string, box string) *baresip {
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
	accounts := fmt.Sprintf("<sip:%s@%s>;regint=600;mwi=yes\n", box, pbxSIP)
	for name, text := range map[string]string{"config": config, "accounts": accounts} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := &baresip{out: new(lockedBuffer), exited: make(chan struct{})}
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
		// baresip prints the body as it came, then a line end of its own.
		body, _, _ = strings.Cut(body, "\n\n")
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
// the demo: its lamp goes on after a deposit made from the phone commands
// and off after a mail client marks the message read over IMAP.
func TestBaresipLamp(t *testing.T) {
	bin := buildPBX(t)
	dir := t.TempDir()
	sipAddr := "127.0.0.1:" + strconv.Itoa(freeSIPPort(t))
	p := startPBX(t, bin, dir, "-user", "1001:secret1", "-sip", sipAddr)
	phone := startBaresip(t, sipAddr, "1001")

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
