package interop

import (
	"bufio"
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embeddedum/um/internal/testwait"
)

// The tests in this file's companions drive whole mail clients (Thunderbird,
// neomutt, offlineimap) against the demo PBX of examples/pbx, run as its own
// process exactly as a user runs it, and judge only what can be observed
// from outside: the demo's lamp lines and list answers, the client's IMAP
// protocol log, the client's screen.

// waitFor bounds each wait for one observable fact; it is not a timing
// assertion, only a guard against hanging when the fact never comes.
const waitFor = 60 * time.Second

// demoPass is the IMAP password of mailbox 1001 in the demo.
const demoPass = "interop-secret-1"

// startProc starts cmd in a process group of its own and stops the whole
// group when the test ends: SIGTERM, then SIGKILL for what is left after a
// few seconds. Thunderbird, for one, forks helpers that outlive a kill of
// its first process.
func startProc(tb testing.TB, cmd *exec.Cmd) {
	tb.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		pgid := cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		// Children that ignored SIGTERM, or the group's last members.
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	})
}

// demo is examples/pbx running as a process, driven through its phone
// protocol on standard input.
type demo struct {
	t           testing.TB
	dir         string
	imap, imaps string // STARTTLS and implicit-TLS addresses
	stdin       io.WriteCloser
	lines       chan string
	stderr      *testwait.Buffer
	backlog     []string // lamp lines read while waiting for an answer
}

// startDemo builds and starts the demo PBX with mailbox 1001.
func startDemo(tb testing.TB) *demo {
	tb.Helper()
	goTool := program(tb, "go", "golang")
	bin := filepath.Join(tb.TempDir(), "pbx")
	build := exec.Command(goTool, "build", "-o", bin, "../examples/pbx")
	if out, err := build.CombinedOutput(); err != nil {
		tb.Fatalf("build the demo PBX: %v\n%s", err, out)
	}
	d := &demo{t: tb, dir: tb.TempDir(), imap: freePort(tb), imaps: freePort(tb), lines: make(chan string, 1000), stderr: new(testwait.Buffer)}
	// -http "": the demo's console would take 127.0.0.1:8080, which other
	// tests running at the same time may hold.
	cmd := exec.Command(bin, "-data", d.dir, "-imap", d.imap, "-imaps", d.imaps, "-http", "", "-user", testUser+":"+demoPass)
	cmd.Stderr = d.stderr
	var err error
	if d.stdin, err = cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	startProc(tb, cmd)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			d.lines <- sc.Text()
		}
		close(d.lines)
	}()
	// The phone protocol starts after the listeners: an answer means the
	// IMAP server is up.
	if got := d.call("mwi " + testUser); !strings.HasPrefix(got[0], "ok ") {
		tb.Fatalf("first answer of the demo = %q, want ok", got)
	}
	return d
}

// freePort returns a loopback address nobody listens on now.
func freePort(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (d *demo) port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// certFile is the demo's self-signed certificate, made at its first start.
func (d *demo) certFile() string { return filepath.Join(d.dir, "cert.pem") }

// certSHA256 returns the SHA-256 fingerprint of the demo's certificate in
// the notation of browsers' certificate dialogs (AB:CD:...).
func (d *demo) certSHA256(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(d.certFile())
	if err != nil {
		tb.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		tb.Fatalf("%s holds no PEM block", d.certFile())
	}
	sum := sha256.Sum256(blk.Bytes)
	hexes := make([]string, len(sum))
	for i, c := range sum {
		hexes[i] = fmt.Sprintf("%02X", c)
	}
	return strings.Join(hexes, ":")
}

func (d *demo) next() (string, bool) {
	select {
	case line, ok := <-d.lines:
		if !ok {
			d.t.Fatalf("the demo PBX exited; stderr:\n%s", d.stderr)
		}
		return line, true
	case <-time.After(waitFor):
		return "", false
	}
}

// call sends a phone command and returns its answer: the "ok" or "error:"
// line and, for list, the lines that follow it. Lamp lines that come
// meanwhile are kept for lamp.
func (d *demo) call(cmd string) []string {
	d.t.Helper()
	if _, err := io.WriteString(d.stdin, cmd+"\n"); err != nil {
		d.t.Fatalf("write %q to the demo: %v", cmd, err)
	}
	for {
		line, ok := d.next()
		if !ok {
			d.t.Fatalf("no answer to %q; stderr:\n%s", cmd, d.stderr)
		}
		if strings.HasPrefix(line, "MWI ") {
			d.backlog = append(d.backlog, line)
			continue
		}
		answer := []string{line}
		if n, err := strconv.Atoi(strings.TrimPrefix(line, "ok ")); err == nil && strings.HasPrefix(cmd, "list ") {
			for range n {
				l, ok := d.next()
				if !ok {
					d.t.Fatalf("list answer %q cut short after %q", cmd, answer)
				}
				answer = append(answer, l)
			}
		}
		return answer
	}
}

// forget drops the lamp lines seen so far, so that lamp waits for a
// change that comes after this point.
func (d *demo) forget() {
	d.backlog = nil
	for {
		select {
		case line := <-d.lines:
			if !strings.HasPrefix(line, "MWI ") {
				d.t.Fatalf("unexpected line %q from the demo", line)
			}
		default:
			return
		}
	}
}

// lamp waits until the demo prints the lamp line "MWI 1001 <want>" (for
// example "on 1/1 (0/1)") and fails with the lamp lines it saw instead.
func (d *demo) lamp(want string) {
	d.t.Helper()
	want = "MWI " + testUser + " " + want
	var seen []string
	for {
		var line string
		if len(d.backlog) > 0 {
			line, d.backlog = d.backlog[0], d.backlog[1:]
		} else {
			var ok bool
			if line, ok = d.next(); !ok {
				d.t.Fatalf("lamp never showed %q; saw %q", want, seen)
			}
		}
		if line == want {
			return
		}
		seen = append(seen, line)
	}
}

// expectList checks the answer to a list command line by line.
func (d *demo) expectList(cmd string, want ...string) {
	d.t.Helper()
	got := d.call(cmd)
	wantAll := append([]string{fmt.Sprintf("ok %d", len(want))}, want...)
	if strings.Join(got, "\n") != strings.Join(wantAll, "\n") {
		d.t.Errorf("%s answered:\n%s\nwant:\n%s", cmd, strings.Join(got, "\n"), strings.Join(wantAll, "\n"))
	}
}

// startX starts a private X display (Xvfb) with a small window manager on
// it and returns the display name for DISPLAY.
func startX(tb testing.TB) string {
	tb.Helper()
	xvfb := program(tb, "Xvfb", "xvfb")
	wm := program(tb, "openbox", "openbox")
	program(tb, "xdotool", "xdotool")
	r, w, err := os.Pipe()
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	// Xvfb picks a free display number itself and writes it to fd 3.
	x := exec.Command(xvfb, "-displayfd", "3", "-screen", "0", "1280x900x24", "-nolisten", "tcp")
	x.ExtraFiles = []*os.File{w}
	startProc(tb, x)
	w.Close()
	num := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		num <- strings.TrimSpace(line)
	}()
	var display string
	select {
	case n := <-num:
		if n == "" {
			tb.Fatal("Xvfb did not report its display")
		}
		display = ":" + n
	case <-time.After(waitFor):
		tb.Fatal("Xvfb did not start")
	}
	wmCmd := exec.Command(wm, "--sm-disable")
	wmCmd.Env = append(os.Environ(), "DISPLAY="+display)
	startProc(tb, wmCmd)
	// The window manager is up when it announces itself (EWMH).
	deadline := time.Now().Add(waitFor)
	for {
		cmd := exec.Command("xdotool", "get_num_desktops")
		cmd.Env = append(os.Environ(), "DISPLAY="+display)
		if err := cmd.Run(); err == nil {
			return display
		}
		if time.Now().After(deadline) {
			tb.Fatal("openbox did not start on " + display)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// xdo runs xdotool on display and returns its output.
func xdo(tb testing.TB, display string, args ...string) string {
	tb.Helper()
	cmd := exec.Command("xdotool", args...)
	cmd.Env = append(os.Environ(), "DISPLAY="+display)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("xdotool %q: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// protoLog is a client's protocol log file, read as it grows.
type protoLog struct {
	t    testing.TB
	find func() string // the file's path, once the client created it
}

func (l *protoLog) text() string {
	p := l.find()
	if p == "" {
		return ""
	}
	b, _ := os.ReadFile(p)
	return string(b)
}

// wait waits until the log, from byte offset since on, matches re, and
// returns the offset after the match and the submatches.
func (l *protoLog) wait(since int, re string) (int, []string) {
	l.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(waitFor)
	for {
		text := l.text()
		if since <= len(text) {
			if loc := rx.FindStringSubmatchIndex(text[since:]); loc != nil {
				var subs []string
				for i := 0; i+1 < len(loc); i += 2 {
					if loc[i] >= 0 {
						subs = append(subs, text[since+loc[i]:since+loc[i+1]])
					} else {
						subs = append(subs, "")
					}
				}
				return since + loc[1], subs
			}
		}
		if time.Now().After(deadline) {
			tail := text[max(since, len(text)-3000):]
			l.t.Fatalf("the client's protocol log never matched %q; its flag traffic since:\n%s\nits end:\n%s", re, flagLines(text[since:], 40), tail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// size is the log's current length, an offset for wait.
func (l *protoLog) size() int { return len(l.text()) }

// flagLines returns the last n lines of log that carry flags (FETCH
// responses, STOREs), so that a failed wait shows what the client was told
// of them even when they are far from the log's end.
func flagLines(log string, n int) string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "FLAGS") || strings.Contains(strings.ToLower(line), " store ") {
			out = append(out, line)
		}
	}
	return strings.Join(out[max(0, len(out)-n):], "\n")
}
