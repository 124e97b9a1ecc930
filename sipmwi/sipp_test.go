package sipmwi_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/sipmwi"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
)

// pbx is a um service with mailbox 1001 and a sipmwi server on loopback.
type pbx struct {
	svc *um.Service
	mb  *um.Mailbox
	srv *sipmwi.Server
	udp string // the server's UDP address
	tcp string // the server's TCP address
}

func newPBX(t testing.TB, opts *sipmwi.Options) *pbx {
	t.Helper()
	p := newDetachedPBX(t, opts)
	p.srv.Attach(p.svc)
	return p
}

// newDetachedPBX is newPBX before the server's Attach.
func newDetachedPBX(t testing.TB, opts *sipmwi.Options) *pbx {
	t.Helper()
	if opts == nil {
		opts = &sipmwi.Options{}
	}
	if opts.Domain == "" {
		opts.Domain = "pbx.test"
	}
	srv, err := sipmwi.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := um.New(memstore.New(), &um.Options{MWI: srv.Update})
	if err != nil {
		t.Fatal(err)
	}
	mb, err := svc.EnsureMailbox(context.Background(), "1001")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(conn)
	go srv.ServeTCP(ln)
	t.Cleanup(func() {
		srv.Close()
		conn.Close()
		ln.Close()
		svc.Close()
	})
	return &pbx{svc: svc, mb: mb, srv: srv, udp: conn.LocalAddr().String(), tcp: ln.Addr().String()}
}

func (p *pbx) deposit(t testing.TB) um.Message {
	t.Helper()
	m, err := p.mb.Deposit(context.Background(), um.Deposit{Audio: bytes.NewReader(wav.Tone(time.Second)),
		CallerNumber: "+4930123", CallerName: "Alice", Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// sipp runs SIPp with a scenario of testdata/ and returns the process and
// its message trace file.
type sipp struct {
	cmd   *exec.Cmd
	trace string
	out   bytes.Buffer
	done  chan struct{} // closed when SIPp exits; err is then set
	err   error
	port  int
}

func startSIPp(t *testing.T, scenario string, args ...string) *sipp {
	t.Helper()
	return startSIPpWith(t, freePort(t), scenario, args...)
}

func startSIPpWith(t *testing.T, port int, scenario string, args ...string) *sipp {
	t.Helper()
	bin, err := exec.LookPath("sipp")
	if err != nil {
		t.Fatal("SIPp is missing (Debian package sip-tester; scripts/test.sh installs it): ", err)
	}
	dir := t.TempDir()
	s := &sipp{trace: filepath.Join(dir, "messages.log"), done: make(chan struct{}), port: port}
	sf, err := filepath.Abs(filepath.Join("testdata", scenario))
	if err != nil {
		t.Fatal(err)
	}
	all := append([]string{"-sf", sf, "-i", "127.0.0.1", "-p", strconv.Itoa(s.port),
		"-trace_msg", "-message_file", s.trace, "-trace_err", "-error_file", s.trace + ".err", "-timeout", "60s", "-timeout_error",
		"-nostdin"}, args...)
	s.cmd = exec.Command(bin, all...)
	s.cmd.Dir = dir
	s.cmd.Stdout = &s.out
	s.cmd.Stderr = &s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.err = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.done
	})
	return s
}

// freePort returns a port free on 127.0.0.1 for both UDP and TCP.
func freePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		c.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

func (s *sipp) wait(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
		if err := s.err; err != nil {
			t.Fatalf("sipp failed: %v\n%s\nerrors:\n%s\ntrace:\n%s", err, tail(s.out.String()), readFile(s.trace+".err"), readFile(s.trace))
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("sipp did not finish\n%s", tail(s.out.String()))
	}
}

func tail(s string) string {
	if len(s) > 3000 {
		return s[len(s)-3000:]
	}
	return s
}

func readFile(name string) string {
	b, _ := os.ReadFile(name)
	return string(b)
}

// traced is one SIP message of SIPp's trace: received (from the server)
// or sent (by SIPp).
type traced struct {
	received bool
	text     string
}

func (m traced) startLine() string { return strings.SplitN(m.text, "\r\n", 2)[0] }

func (m traced) header(name string) string {
	head, _, _ := strings.Cut(m.text, "\r\n\r\n")
	for _, line := range strings.Split(head, "\r\n")[1:] {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (m traced) body() string {
	_, body, _ := strings.Cut(m.text, "\r\n\r\n")
	return body
}

// messages parses SIPp's -trace_msg file.
func messages(t testing.TB, file string) []traced {
	t.Helper()
	raw := readFile(file)
	var out []traced
	for _, entry := range strings.Split(raw, "----------------------------------------------- ")[1:] {
		lines := strings.SplitN(entry, "\n", 3)
		if len(lines) < 3 {
			continue
		}
		kind := lines[1]
		if !strings.Contains(kind, "message received") && !strings.Contains(kind, "message sent") {
			continue
		}
		text := strings.TrimLeft(lines[2], "\r\n")
		// SIPp writes the message with \n line ends in its log; SIP's are
		// \r\n, restored here so header and body split the SIP way.
		text = strings.ReplaceAll(strings.ReplaceAll(text, "\r\n", "\n"), "\n", "\r\n")
		text = strings.TrimRight(text, "\r\n") + "\r\n"
		if i := strings.Index(text, "\r\n\r\n"); i >= 0 {
			n, _ := strconv.Atoi((traced{text: text}).header("Content-Length"))
			if len(text) >= i+4+n {
				text = text[:i+4+n]
			}
		}
		out = append(out, traced{received: strings.Contains(kind, "received"), text: text})
	}
	return out
}

// notifies returns the NOTIFYs SIPp received, in order.
func notifies(msgs []traced) []traced {
	var out []traced
	for _, m := range msgs {
		if m.received && strings.HasPrefix(m.startLine(), "NOTIFY ") {
			out = append(out, m)
		}
	}
	return out
}

// answeredNotifies counts the 200s SIPp sent to NOTIFYs.
func answeredNotifies(t testing.TB, file string) int {
	n := 0
	for _, m := range messages(t, file) {
		if !m.received && strings.HasPrefix(m.startLine(), "SIP/2.0 200") && strings.HasSuffix(m.header("CSeq"), "NOTIFY") {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, what string, s *sipp, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		select {
		case <-s.done:
			t.Fatalf("sipp ended while waiting for %s: %v\n%s\ntrace:\n%s", what, s.err, tail(s.out.String()), readFile(s.trace))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s\n%s\ntrace:\n%s", what, tail(s.out.String()), readFile(s.trace))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func body(waiting string, counts string) string {
	return "Messages-Waiting: " + waiting + "\r\nMessage-Account: sip:1001@pbx.test\r\nVoice-Message: " + counts + "\r\n"
}

// TestSIPpSubscribe runs a phone's whole subscription in SIPp, over UDP and
// over TCP: SUBSCRIBE answered 200 with an immediate NOTIFY of the current
// state, a NOTIFY on each lamp change (deposit, heard), a refresh answered
// with a NOTIFY, and Expires: 0 answered with a terminated NOTIFY; the
// NOTIFYs are checked byte for byte where the RFCs fix them.
func TestSIPpSubscribe(t *testing.T) {
	for _, tc := range []struct{ name, transport string }{{"udp", "u1"}, {"tcp", "t1"}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPBX(t, nil)
			addr := p.udp
			if tc.name == "tcp" {
				addr = p.tcp
			}
			s := startSIPp(t, "subscribe.xml", "-m", "1", "-t", tc.transport, addr)
			waitFor(t, "the first NOTIFY answered", s, func() bool { return answeredNotifies(t, s.trace) >= 1 })
			if got := p.srv.Subscriptions("1001"); got != 1 {
				t.Errorf("Subscriptions(1001) = %d after SUBSCRIBE, want 1", got)
			}
			m := p.deposit(t)
			waitFor(t, "the deposit's NOTIFY answered", s, func() bool { return answeredNotifies(t, s.trace) >= 2 })
			if err := p.mb.MarkHeard(context.Background(), m.ID); err != nil {
				t.Fatal(err)
			}
			s.wait(t)
			if got := p.srv.Subscriptions("1001"); got != 0 {
				t.Errorf("Subscriptions(1001) = %d after Expires: 0, want 0", got)
			}

			msgs := messages(t, s.trace)
			var ok200 traced
			for _, m := range msgs {
				if m.received && strings.HasPrefix(m.startLine(), "SIP/2.0 200") {
					ok200 = m
					break
				}
			}
			_, toTag, _ := strings.Cut(ok200.header("To"), "tag=")
			if toTag == "" {
				t.Fatalf("200 to SUBSCRIBE has no To tag: %q", ok200.text)
			}
			if c := ok200.header("Contact"); !strings.HasPrefix(c, "<sip:1001@127.0.0.1:") {
				t.Errorf("200 Contact = %q, want the mailbox at the server's address", c)
			}
			ns := notifies(msgs)
			want := []struct{ state, body string }{
				{"active;expires=", body("no", "0/0 (0/0)")},
				{"active;expires=", body("yes", "1/0 (0/0)")},
				{"active;expires=", body("no", "0/1 (0/0)")},
				{"active;expires=", body("no", "0/1 (0/0)")},
				{"terminated;reason=timeout", body("no", "0/1 (0/0)")},
			}
			if len(ns) != len(want) {
				t.Fatalf("got %d NOTIFYs, want %d:\n%s", len(ns), len(want), readFile(s.trace))
			}
			lastCSeq := 0
			for i, n := range ns {
				if got := n.body(); got != want[i].body {
					t.Errorf("NOTIFY %d body = %q, want %q", i, got, want[i].body)
				}
				if got := n.header("Subscription-State"); !strings.HasPrefix(got, want[i].state) {
					t.Errorf("NOTIFY %d Subscription-State = %q, want %q...", i, got, want[i].state)
				}
				for h, v := range map[string]string{"Event": "message-summary",
					"Content-Type":   "application/simple-message-summary",
					"Content-Length": strconv.Itoa(len(want[i].body))} {
					if got := n.header(h); got != v {
						t.Errorf("NOTIFY %d %s = %q, want %q", i, h, got, v)
					}
				}
				if got := n.header("From"); !strings.HasSuffix(got, "tag="+toTag) {
					t.Errorf("NOTIFY %d From = %q, want the dialog's tag %s", i, got, toTag)
				}
				seq, _ := strconv.Atoi(strings.Fields(n.header("CSeq") + " x")[0])
				if seq <= lastCSeq {
					t.Errorf("NOTIFY %d CSeq = %q, not above the previous %d", i, n.header("CSeq"), lastCSeq)
				}
				lastCSeq = seq
			}
		})
	}
}

// TestSIPpUnsolicited: a configured contact that never subscribes gets a
// NOTIFY outside any dialog at start (the current state) and on each lamp
// change.
func TestSIPpUnsolicited(t *testing.T) {
	port := freePort(t)
	p := newDetachedPBX(t, &sipmwi.Options{
		Contacts: map[string][]string{"1001": {"sip:1001@127.0.0.1:" + strconv.Itoa(port)}}})
	s := startSIPpWith(t, port, "unsolicited.xml", "-m", "2")
	time.Sleep(300 * time.Millisecond) // SIPp is listening
	p.srv.Attach(p.svc)
	waitFor(t, "the start NOTIFY answered", s, func() bool { return answeredNotifies(t, s.trace) >= 1 })
	p.deposit(t)
	s.wait(t)
	ns := notifies(messages(t, s.trace))
	want := []string{body("no", "0/0 (0/0)"), body("yes", "1/0 (0/0)")}
	if len(ns) != len(want) {
		t.Fatalf("got %d NOTIFYs, want %d:\n%s", len(ns), len(want), readFile(s.trace))
	}
	for i, n := range ns {
		if got := n.body(); got != want[i] {
			t.Errorf("NOTIFY %d body = %q, want %q", i, got, want[i])
		}
		if got := n.header("Subscription-State"); got != "active" {
			t.Errorf("NOTIFY %d Subscription-State = %q, want active", i, got)
		}
		if got := n.header("Event"); got != "message-summary" {
			t.Errorf("NOTIFY %d Event = %q, want message-summary", i, got)
		}
		if got := n.startLine(); got != "NOTIFY sip:1001@127.0.0.1:"+strconv.Itoa(port)+" SIP/2.0" {
			t.Errorf("NOTIFY %d Request-Line = %q, want the configured contact", i, got)
		}
	}
	if ns[0].header("Call-ID") == ns[1].header("Call-ID") {
		t.Errorf("two unsolicited NOTIFYs share Call-ID %q; each is a request of its own", ns[0].header("Call-ID"))
	}
}
