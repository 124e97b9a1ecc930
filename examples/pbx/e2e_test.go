package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embeddedum/um/internal/testwait"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// wait bounds how long the end-to-end tests wait for one thing before they
// fail instead of hanging; it is not a timing assertion.
const wait = 30 * time.Second

// buildPBX compiles the command into a temporary directory, once per test.
func buildPBX(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pbx")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// pbxProc is the PBX running as a separate process, driven like a script
// would drive it.
type pbxProc struct {
	t           testing.TB
	cmd         *exec.Cmd
	stdin       io.WriteCloser
	lines       chan string
	stderr      *testwait.Buffer
	imap, imaps string
	exited      chan error
}

func startPBX(t testing.TB, bin, dir string, args ...string) *pbxProc {
	t.Helper()
	p := &pbxProc{t: t, imap: freeAddr(t), imaps: freeAddr(t), lines: make(chan string, 100), stderr: new(testwait.Buffer), exited: make(chan error, 1)}
	p.cmd = exec.Command(bin, append([]string{"-data", dir, "-imap", p.imap, "-imaps", p.imaps, "-http", ""}, args...)...)
	p.cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.exited <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
		}
	})
	// The command loop starts after the listeners: the first answer says
	// the IMAP server is up.
	p.send("mwi 1001")
	if got := p.next(); !strings.HasPrefix(got, "ok ") {
		t.Fatalf("first answer = %q, want ok", got)
	}
	return p
}

func (p *pbxProc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("write %q: %v; stderr:\n%s", line, err, p.stderr)
	}
}

func (p *pbxProc) next() string {
	p.t.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("standard output closed; stderr:\n%s", p.stderr)
		}
		return line
	case <-time.After(wait):
		p.t.Fatalf("no output line within %v; stderr:\n%s", wait, p.stderr)
	}
	return ""
}

// expect reads the next lines and fails unless they are want, in order.
func (p *pbxProc) expect(want ...string) {
	p.t.Helper()
	for _, w := range want {
		if got := p.next(); got != w {
			p.t.Fatalf("output line = %q, want %q; stderr:\n%s", got, w, p.stderr)
		}
	}
}

// waitExit waits for the process to end and fails unless it exits 0 with no
// output left unread.
func (p *pbxProc) waitExit() {
	p.t.Helper()
	for line := range p.lines {
		p.t.Errorf("unexpected output line %q", line)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			p.t.Fatalf("pbx exited with %v; stderr:\n%s", err, p.stderr)
		}
	case <-time.After(wait):
		p.t.Fatalf("pbx did not exit within %v; stderr:\n%s", wait, p.stderr)
	}
}

// tlsConfig trusts the certificate the PBX generated in dir.
func tlsConfig(t testing.TB, dir string) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(dir, "cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("cert.pem holds no certificate")
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// TestEndToEnd runs the built command as a person or script would, with a
// mail client watching the mailbox over IMAP IDLE.
func TestEndToEnd(t *testing.T) {
	bin := buildPBX(t)
	dir := t.TempDir()
	users := []string{"-user", "1001:secret1", "-user", "1002:secret2"}
	p := startPBX(t, bin, dir, users...)

	exists := make(chan uint32, 10)
	c, err := imapclient.DialStartTLS(p.imap, &imapclient.Options{
		TLSConfig: tlsConfig(t, dir),
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					exists <- *d.NumMessages
				}
			},
		},
	})
	if err != nil {
		t.Fatalf("STARTTLS connection: %v", err)
	}
	defer c.Close()
	if err := c.Login("1001", "wrong").Wait(); err == nil {
		t.Errorf("LOGIN with a wrong password succeeded")
	}
	if err := c.Login("1001", "secret1").Wait(); err != nil {
		t.Fatalf("LOGIN: %v", err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT INBOX: %v", err)
	}
	if sel.NumMessages != 0 {
		t.Fatalf("INBOX holds %d messages at start, want 0", sel.NumMessages)
	}
	validity := sel.UIDValidity

	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("IDLE: %v", err)
	}
	p.send("deposit 1001 5551234 Alice Smith")
	p.expect("MWI 1001 on 1/0 (0/0)", "ok 1")
	select {
	case n := <-exists:
		if n != 1 {
			t.Fatalf("EXISTS %d, want 1", n)
		}
	case <-time.After(wait):
		t.Fatalf("no EXISTS within %v of the deposit", wait)
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("IDLE ended with %v", err)
	}

	// The client plays the message: the lamp goes off.
	store := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}
	if err := c.Store(imap.UIDSetNum(1), store, nil).Close(); err != nil {
		t.Fatalf("UID STORE +FLAGS \\Seen: %v", err)
	}
	p.expect("MWI 1001 off 0/1 (0/0)")
	p.send("list 1001")
	p.expect("ok 1", "1 heard 5551234 3s Alice Smith")

	// Implicit TLS serves the other mailbox, and only it.
	c2, err := imapclient.DialTLS(p.imaps, &imapclient.Options{TLSConfig: tlsConfig(t, dir)})
	if err != nil {
		t.Fatalf("TLS connection: %v", err)
	}
	if err := c2.Login("1002", "secret1").Wait(); err == nil {
		t.Errorf("LOGIN as 1002 with 1001's password succeeded")
	}
	if err := c2.Login("1002", "secret2").Wait(); err != nil {
		t.Fatalf("LOGIN over TLS: %v", err)
	}
	if sel, err := c2.Select("INBOX", nil).Wait(); err != nil || sel.NumMessages != 0 {
		t.Fatalf("SELECT INBOX of 1002 = %+v, %v; want 0 messages", sel, err)
	}
	c2.Logout().Wait()

	// End of input stops the PBX cleanly, with the session still open.
	p.stdin.Close()
	p.waitExit()
	c.Close()

	// A restart finds the message, its UID and its flags where they were.
	p = startPBX(t, bin, dir, users...)
	p.send("list 1001")
	p.expect("ok 1", "1 heard 5551234 3s Alice Smith")
	c, err = imapclient.DialStartTLS(p.imap, &imapclient.Options{TLSConfig: tlsConfig(t, dir)})
	if err != nil {
		t.Fatalf("STARTTLS connection after restart: %v", err)
	}
	defer c.Close()
	if err := c.Login("1001", "secret1").Wait(); err != nil {
		t.Fatalf("LOGIN after restart: %v", err)
	}
	sel, err = c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatalf("SELECT after restart: %v", err)
	}
	if sel.UIDValidity != validity || sel.NumMessages != 1 {
		t.Errorf("after restart UIDVALIDITY %d with %d messages, want %d with 1", sel.UIDValidity, sel.NumMessages, validity)
	}
	msgs, err := c.Fetch(imap.UIDSetNum(1), &imap.FetchOptions{UID: true, Flags: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("UID FETCH 1 after restart = %d messages, %v; want 1", len(msgs), err)
	}
	if msgs[0].UID != 1 || !hasFlag(msgs[0].Flags, imap.FlagSeen) {
		t.Errorf("after restart UID %d flags %v, want UID 1 with \\Seen", msgs[0].UID, msgs[0].Flags)
	}
	c.Logout().Wait()

	// SIGTERM stops it cleanly too.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitExit()
}

// TestInsecureAuth checks that LOGIN without TLS is refused by default and
// allowed with -insecure-auth.
func TestInsecureAuth(t *testing.T) {
	bin := buildPBX(t)
	for _, insecure := range []bool{false, true} {
		args := []string{"-user", "1001:secret1"}
		if insecure {
			args = append(args, "-insecure-auth")
		}
		p := startPBX(t, bin, t.TempDir(), args...)
		c, err := imapclient.DialInsecure(p.imap, nil)
		if err != nil {
			t.Fatal(err)
		}
		err = c.Login("1001", "secret1").Wait()
		if insecure && err != nil {
			t.Errorf("-insecure-auth: LOGIN without TLS = %v, want success", err)
		}
		if !insecure && err == nil {
			t.Errorf("LOGIN without TLS succeeded without -insecure-auth")
		}
		c.Close()
		if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		p.waitExit()
	}
}

func hasFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}
