package imapserver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// The tests in this file are the hostile probes of the server: each one is
// what an attacker or a careless client sent, and what it must get.

func (e *env) loggedIn(user string) *raw {
	e.t.Helper()
	r := dialRaw(e.t, e.tlsAddr, e.clientTLS)
	if got := r.cmd("a", "LOGIN "+user+" "+users[user].password); !strings.HasPrefix(got, "a OK") {
		e.t.Fatalf("LOGIN = %q", got)
	}
	return r
}

func (e *env) hasFolder(mailbox, folder string) bool {
	e.t.Helper()
	_, err := e.mailbox(mailbox).Folder(context.Background(), folder)
	return err == nil
}

// TestRefusedLiteralNeverRuns: the bytes of an APPEND literal the server
// refuses before reading it are never parsed as commands.
func TestRefusedLiteralNeverRuns(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.AppendLimit = 1 << 20 })
	if _, err := e.mailbox("1001").CreateFolder(t.Context(), "Keep"); err != nil {
		t.Fatal(err)
	}
	t.Run("too large with LITERAL+", func(t *testing.T) {
		r := e.loggedIn("alice")
		// Announced far over the limit: answered at once, and the
		// connection is closed, since reading 32 MiB to drop it costs
		// more than the client deserves.
		r.send("b APPEND Keep {33554433+}\r\nx2 CREATE injected\r\n")
		if got := r.line(); !strings.HasPrefix(got, "b NO [TOOBIG]") {
			t.Fatalf("APPEND {33554433+} = %q, want b NO [TOOBIG] at once", got)
		}
		if !r.closed() {
			t.Fatal("connection still open after a refused 32 MiB literal")
		}
		if e.hasFolder("1001", "injected") {
			t.Fatal("the literal's content ran as a command: folder injected exists")
		}
	})
	t.Run("slightly too large with LITERAL+", func(t *testing.T) {
		// Just over the limit: the literal is read and dropped, and the
		// connection goes on with the next command.
		e := newEnv(t, func(o *Options) { o.AppendLimit = 100 })
		if _, err := e.mailbox("1001").CreateFolder(t.Context(), "Keep"); err != nil {
			t.Fatal(err)
		}
		r := e.loggedIn("alice")
		body := "x2 CREATE injected\r\n" + strings.Repeat("y", 100)
		r.send(fmt.Sprintf("b APPEND Keep {%d+}\r\n%s\r\nc NOOP\r\n", len(body), body))
		if got := r.line(); !strings.HasPrefix(got, "b NO [TOOBIG]") {
			t.Fatalf("APPEND over the limit = %q, want b NO [TOOBIG]", got)
		}
		if got := r.line(); !strings.HasPrefix(got, "c OK") {
			t.Fatalf("next command = %q, want c OK", got)
		}
		if e.hasFolder("1001", "injected") {
			t.Fatal("the literal's content ran as a command")
		}
	})
	t.Run("folder that does not exist", func(t *testing.T) {
		r := e.loggedIn("alice")
		body := "x3 CREATE injected2\r\n"
		r.send(fmt.Sprintf("b APPEND \"No&Such\" {%d+}\r\n%s\r\nc NOOP\r\n", len(body), body))
		if got := r.line(); !strings.HasPrefix(got, "b NO [TRYCREATE]") {
			t.Fatalf("APPEND to a missing folder = %q, want b NO [TRYCREATE]", got)
		}
		if got := r.line(); !strings.HasPrefix(got, "c OK") {
			t.Fatalf("next command = %q, want c OK", got)
		}
		if e.hasFolder("1001", "injected2") {
			t.Fatal("the literal's content ran as a command")
		}
	})
	t.Run("syntax error before the literal", func(t *testing.T) {
		r := e.loggedIn("alice")
		body := "x4 CREATE injected3\r\n"
		r.send(fmt.Sprintf("b APPEND Keep (\\Seen {%d+}\r\n%s\r\nc NOOP\r\n", len(body), body))
		if got := r.line(); !strings.HasPrefix(got, "b BAD") {
			t.Fatalf("malformed APPEND = %q, want b BAD", got)
		}
		if got := r.line(); !strings.HasPrefix(got, "c OK") {
			t.Fatalf("next command = %q, want c OK", got)
		}
		if e.hasFolder("1001", "injected3") {
			t.Fatal("the literal's content ran as a command")
		}
	})
}

// TestHugeLoginLiteral: a LOGIN announcing a 100 MB literal is answered at
// once, without a continuation request.
func TestHugeLoginLiteral(t *testing.T) {
	e := newEnv(t, nil)
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	start := time.Now()
	r.send("a LOGIN {100000000}\r\n")
	got := r.line()
	if !strings.HasPrefix(got, "a NO") && !strings.HasPrefix(got, "a BAD") {
		t.Fatalf("LOGIN {100000000} = %q, want a tagged NO or BAD", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("LOGIN {100000000} answered after %v, want at once", d)
	}
	if got := r.cmd("b", "NOOP"); !strings.HasPrefix(got, "b OK") {
		t.Fatalf("NOOP after = %q, want OK", got)
	}
}

// TestIDBeforeLogin: ID (RFC 2971) is answered in any state.
func TestIDBeforeLogin(t *testing.T) {
	e := newEnv(t, nil)
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	lines := r.until0(`a ID ("name" "probe" "version" "1")`, "a")
	if got := strings.Join(lines, "|"); !strings.Contains(got, "* ID (") || !strings.HasPrefix(lines[len(lines)-1], "a OK") {
		t.Fatalf("ID before login = %q, want * ID and OK", got)
	}
	if got := r.cmd("b", "ID NIL"); !strings.HasPrefix(got, "b OK") {
		t.Fatalf("ID NIL = %q, want OK", got)
	}
	if got := r.cmd("c", "LOGIN alice alice-pw"); !strings.HasPrefix(got, "c OK") {
		t.Fatalf("LOGIN after ID = %q", got)
	}
}

// TestSearchBudgets: over-deep or over-long SEARCH criteria get a clear
// BAD at once, and the connection goes on.
func TestSearchBudgets(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 10)
	r := e.loggedIn("alice")
	r.cmd("b", "SELECT INBOX")
	deep := strings.Repeat("NOT ", 12400) + "ALL"
	if got := r.cmd("c", "SEARCH "+deep); !strings.HasPrefix(got, "c BAD") || !strings.Contains(got, "deep") {
		t.Fatalf("SEARCH NOT x12400 = %q, want BAD ... too deep", got)
	}
	long := strings.Repeat("OR TEXT a ", 1000) + "TEXT a"
	if got := r.cmd("d", "SEARCH "+long); !strings.HasPrefix(got, "d BAD") || !strings.Contains(got, "deep") {
		t.Fatalf("SEARCH with 1000 nested ORs = %q, want BAD ... too deep", got)
	}
	flat := strings.Repeat("TEXT a ", 1000) + "ALL"
	if got := r.cmd("d2", "SEARCH "+flat); !strings.HasPrefix(got, "d2 BAD") || !strings.Contains(got, "search keys") {
		t.Fatalf("SEARCH with 1001 keys = %q, want BAD ... too many search keys", got)
	}
	if got := r.cmd("e", "SEARCH "+strings.Repeat("NOT ", 10)+"ALL"); !strings.HasPrefix(got, "e OK") {
		t.Fatalf("SEARCH NOT x10 = %q, want OK", got)
	}
}

// TestSearchReadsTextOnce: a SEARCH with many text keys reads each
// message's content at most once.
func TestSearchReadsTextOnce(t *testing.T) {
	e := newEnv(t, nil)
	r := e.loggedIn("alice")
	r.cmd("b", "CREATE Mail")
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("Subject: m%d\r\n\r\nbody %d\r\n", i, i)
		r.send(fmt.Sprintf("x APPEND Mail {%d+}\r\n%s\r\n", len(msg), msg))
		r.until("x")
	}
	r.cmd("c", "SELECT Mail")
	before := e.store.opens.Load()
	crit := strings.Repeat("OR TEXT nothing ", 50) + "TEXT body"
	lines := r.until0("d SEARCH "+crit, "d")
	if got := strings.Join(lines, "|"); !strings.Contains(got, "* SEARCH 1 2 3") {
		t.Fatalf("SEARCH = %q, want 1 2 3", got)
	}
	if n := e.store.opens.Load() - before; n > 3 {
		t.Fatalf("SEARCH with 51 text keys opened content %d times, want at most 3", n)
	}
}

// TestStoreSkipsExpunged: a STORE of a set in which another session
// expunged a message stores the rest (as Dovecot does).
func TestStoreSkipsExpunged(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 3; i++ {
		e.deposit("1001", fmt.Sprintf("+%d", i), 10)
	}
	a := e.loggedIn("alice")
	a.cmd("b", "SELECT INBOX")
	msgs := e.list("1001", um.Inbox)
	mb := e.mailbox("1001")
	if _, err := mb.SetFlags(t.Context(), []uuid.UUID{msgs[1].ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted}); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Expunge(t.Context(), um.Inbox, nil); err != nil {
		t.Fatal(err)
	}
	lines := a.until0(`c STORE 1:3 +FLAGS (\Flagged)`, "c")
	got := strings.Join(lines, "|")
	if !strings.HasPrefix(lines[len(lines)-1], "c OK") {
		t.Fatalf("STORE 1:3 = %q, want OK", got)
	}
	for _, m := range e.list("1001", um.Inbox) {
		if !m.Flags.Has(um.FlagFlagged) {
			t.Fatalf("message %d not flagged after STORE (%q)", m.UID, got)
		}
	}
}

// TestNewKeywordFlagsFirst: a keyword the client has not been told of
// comes in FLAGS before the FETCH that shows it.
func TestNewKeywordFlagsFirst(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 10)
	r := e.loggedIn("alice")
	r.cmd("b", "SELECT INBOX")
	lines := r.until0("c STORE 1 +FLAGS ($Brandnew)", "c")
	flags, fetch := -1, -1
	for i, l := range lines {
		if strings.HasPrefix(l, "* FLAGS") && strings.Contains(l, "$Brandnew") && flags < 0 {
			flags = i
		}
		if strings.Contains(l, "FETCH") && strings.Contains(l, "$Brandnew") && fetch < 0 {
			fetch = i
		}
	}
	if flags < 0 || fetch < 0 || flags > fetch {
		t.Fatalf("STORE of a new keyword = %q, want * FLAGS with it before the FETCH", lines)
	}
}

// TestIdleEndedByOtherLine: IDLE ended by a line other than DONE gets BAD
// and the session goes on.
func TestIdleEndedByOtherLine(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 10)
	r := e.loggedIn("alice")
	r.cmd("b", "SELECT INBOX")
	for i := 0; i < 20; i++ {
		r.send("c IDLE\r\n")
		if got := r.line(); !strings.HasPrefix(got, "+") {
			t.Fatalf("IDLE = %q", got)
		}
		e.deposit("1001", "+2", 10)
		r.send("d NOOP\r\n")
		lines := r.until("c")
		if !strings.HasPrefix(lines[len(lines)-1], "c BAD") {
			t.Fatalf("IDLE ended by NOOP = %q, want c BAD", lines)
		}
		if got := r.cmd("e", "NOOP"); !strings.HasPrefix(got, "e OK") {
			t.Fatalf("NOOP after = %q", got)
		}
	}
}

// TestIdleNoLostWakeup: deposits made at any moment around a client's
// commands and IDLEs all reach the idling client while it idles.
func TestIdleNoLostWakeup(t *testing.T) {
	e := newEnv(t, nil)
	r := e.loggedIn("alice")
	r.cmd("b", "SELECT INBOX")
	other := e.loggedIn("alice")
	_ = other
	var wg sync.WaitGroup
	defer wg.Wait()
	n := 0
	for round := 0; round < 30; round++ {
		// Deposits while the client is between commands...
		e.deposit("1001", "+1", 10)
		n++
		r.cmd("f", "UID FETCH 1:* (FLAGS)")
		// ...and while its IDLE starts.
		wg.Add(1)
		go func() { defer wg.Done(); e.deposit("1001", "+2", 10) }()
		n++
		r.send("c IDLE\r\n")
		want := fmt.Sprintf("* %d EXISTS", n)
		deadline := time.Now().Add(10 * time.Second)
		for {
			l := r.line()
			if l == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: IDLE never got %q", round, want)
			}
		}
		wg.Wait()
		r.send("DONE\r\n")
		r.until("c")
	}
}

// blockingStore holds every content read until its context is done, and
// says so: the proof that a command's work stops when its client leaves.
type blockingStore struct {
	um.Store
	block     atomic.Bool
	opened    chan struct{}
	cancelled chan struct{}
}

func (s *blockingStore) Open(ctx context.Context, mailbox string, id uuid.UUID) (io.ReadCloser, error) {
	if s.block.Load() {
		s.opened <- struct{}{}
		<-ctx.Done()
		s.cancelled <- struct{}{}
		return nil, ctx.Err()
	}
	return s.Store.Open(ctx, mailbox, id)
}

// TestSearchStopsWhenClientLeaves: a SEARCH still reading message text
// when its client hangs up is cancelled.
func TestSearchStopsWhenClientLeaves(t *testing.T) {
	bs := &blockingStore{opened: make(chan struct{}, 10), cancelled: make(chan struct{}, 10)}
	e := newEnvOn(t, func(s um.Store) um.Store { bs.Store = s; return bs }, um.Options{}, nil)
	r := e.loggedIn("alice")
	r.cmd("b", "CREATE Mail")
	msg := "Subject: m\r\n\r\nbody\r\n"
	r.send(fmt.Sprintf("x APPEND Mail {%d+}\r\n%s\r\n", len(msg), msg))
	r.until("x")
	r.cmd("c", "SELECT Mail")
	bs.block.Store(true)
	r.send("d SEARCH TEXT body\r\n")
	select {
	case <-bs.opened:
	case <-time.After(10 * time.Second):
		t.Fatal("SEARCH never read the message")
	}
	r.c.Close()
	select {
	case <-bs.cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("SEARCH went on after its client left")
	}
}

// dialRawFrom is dialRaw over implicit TLS from a local address of
// 127.0.0.0/8, so a test can speak from several remote addresses.
func dialRawFrom(t testing.TB, e *env, local string) *raw {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := tls.DialWithDialer(d, "tcp", e.tlsAddr, e.clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &raw{t: t, c: c, br: bufio.NewReader(c)}
	if g := r.line(); !strings.HasPrefix(g, "* OK") {
		t.Fatalf("greeting = %q", g)
	}
	return r
}

// TestLoginPenaltyPerAccount: failed logins of one account are slowed
// whatever address they come from, and checked one at a time.
func TestLoginPenaltyPerAccount(t *testing.T) {
	var mu sync.Mutex
	var delays []time.Duration
	e := newEnv(t, func(o *Options) { o.LoginFailureDelay = time.Second })
	e.srv.sleep = func(_ context.Context, d time.Duration) { mu.Lock(); delays = append(delays, d); mu.Unlock() }
	for i, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		r := dialRawFrom(t, e, ip)
		if got := r.cmd("a", "LOGIN alice wrong"+itoa(i)); !strings.Contains(got, "AUTHENTICATIONFAILED") {
			t.Fatalf("bad LOGIN from %s = %q", ip, got)
		}
	}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}
	if fmt.Sprint(delays) != fmt.Sprint(want) {
		t.Fatalf("delays of failures from 4 addresses = %v, want %v", delays, want)
	}
	// Another account from a fresh address starts at the base delay.
	r := dialRawFrom(t, e, "127.0.0.6")
	r.cmd("b", "LOGIN bob wrong")
	if got := delays[len(delays)-1]; got != time.Second {
		t.Fatalf("bob's first failure delay = %v, want 1s", got)
	}

	// While a failure's penalty is served, the account's next login waits.
	release := make(chan struct{})
	served := make(chan struct{}, 1)
	e.srv.sleep = func(context.Context, time.Duration) { served <- struct{}{}; <-release }
	r1 := dialRawFrom(t, e, "127.0.0.7")
	r2 := dialRawFrom(t, e, "127.0.0.8")
	r1.send("c LOGIN alice wrong-again\r\n")
	<-served
	calls := e.authCalls.Load()
	r2.send("d LOGIN alice alice-pw\r\n")
	time.Sleep(100 * time.Millisecond) // room for a wrong early check
	if n := e.authCalls.Load(); n != calls {
		t.Fatalf("a second login of alice was checked during the first one's penalty (%d checks, want %d)", n, calls)
	}
	close(release)
	if got := r1.until("c"); !strings.Contains(got[len(got)-1], "AUTHENTICATIONFAILED") {
		t.Fatalf("first login = %q", got)
	}
	if got := r2.until("d"); !strings.HasPrefix(got[len(got)-1], "d OK") {
		t.Fatalf("second login = %q, want OK once the penalty is served", got)
	}
}

// TestTLS12OnlyAEAD: TLS 1.2 is offered with AEAD suites only; a client
// that offers nothing but CBC-SHA1 suites is refused.
func TestTLS12OnlyAEAD(t *testing.T) {
	e := newEnv(t, nil)
	cbc := e.clientTLS.Clone()
	cbc.MaxVersion = tls.VersionTLS12
	cbc.CipherSuites = []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA,
	}
	if c, err := tls.Dial("tcp", e.tlsAddr, cbc); err == nil {
		c.Close()
		t.Fatal("TLS 1.2 handshake with CBC-SHA1 suites only succeeded, want failure")
	}
	gcm := e.clientTLS.Clone()
	gcm.MaxVersion = tls.VersionTLS12
	c, err := tls.Dial("tcp", e.tlsAddr, gcm)
	if err != nil {
		t.Fatalf("TLS 1.2 handshake with default suites: %v", err)
	}
	defer c.Close()
	if cs := tls.CipherSuiteName(c.ConnectionState().CipherSuite); !strings.Contains(cs, "GCM") && !strings.Contains(cs, "CHACHA20") {
		t.Fatalf("TLS 1.2 suite = %s, want an AEAD one", cs)
	}
}

// TestClientHelloOnStartTLSPort: a client that opens the STARTTLS port
// with a TLS ClientHello gets implicit TLS there (Thunderbird's security
// exception dialog fetches the certificate so), and can log in.
func TestClientHelloOnStartTLSPort(t *testing.T) {
	e := newEnv(t, nil)
	r := dialRaw(t, e.plain, e.clientTLS)
	if got := r.cmd("a", "LOGIN alice alice-pw"); !strings.HasPrefix(got, "a OK") {
		t.Fatalf("LOGIN over TLS on the STARTTLS port = %q", got)
	}
	// A plain client there still gets the plain greeting and STARTTLS.
	p := dialRaw(t, e.plain, nil)
	if got := strings.Join(p.until0("b CAPABILITY", "b"), " "); !strings.Contains(got, "STARTTLS") {
		t.Fatalf("plain CAPABILITY = %q, want STARTTLS", got)
	}
}

// TestQuota: GETQUOTAROOT shows MESSAGE against MaxMessages and STORAGE
// in KiB; an APPEND past the limit answers NO [OVERQUOTA].
func TestQuota(t *testing.T) {
	e := newEnvWith(t, um.Options{MaxMessages: 2}, func(o *Options) { o.AppendLimit = 1 << 20 })
	e.deposit("1001", "+1", 2000)
	r := e.loggedIn("alice")
	if caps := strings.Join(r.until0("b CAPABILITY", "b"), " "); !strings.Contains(caps, "QUOTA=RES-MESSAGE") || !strings.Contains(caps, "QUOTA=RES-STORAGE") {
		t.Fatalf("CAPABILITY = %q, want QUOTA=RES-MESSAGE and QUOTA=RES-STORAGE", caps)
	}
	lines := r.until0("c GETQUOTAROOT INBOX", "c")
	got := strings.Join(lines, "|")
	if !strings.Contains(got, `* QUOTAROOT INBOX ""`) || !strings.Contains(got, `* QUOTA "" (STORAGE 2 2048 MESSAGE 1 2)`) {
		t.Fatalf("GETQUOTAROOT INBOX = %q, want root \"\" with STORAGE 2 2048 MESSAGE 1 2", got)
	}
	r.cmd("d", "CREATE Saved")
	msg := "Subject: x\r\n\r\nhello\r\n"
	r.send(fmt.Sprintf("e APPEND Saved {%d+}\r\n%s\r\n", len(msg), msg))
	if l := r.until("e"); !strings.HasPrefix(l[len(l)-1], "e OK") {
		t.Fatalf("APPEND within the quota = %q", l)
	}
	r.send(fmt.Sprintf("f APPEND Saved {%d+}\r\n%s\r\n", len(msg), msg))
	if l := r.until("f"); !strings.HasPrefix(l[len(l)-1], "f NO [OVERQUOTA]") {
		t.Fatalf("APPEND over the quota = %q, want NO [OVERQUOTA]", l)
	}
}

// TestStoreWhileOthersExpunge: STOREs of whole ranges while another
// session expunges and the phone deposits all succeed (imaptest's stress
// mode, made small).
func TestStoreWhileOthersExpunge(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 20; i++ {
		e.deposit("1001", "+1", 10)
	}
	a := e.loggedIn("alice")
	a.cmd("b", "SELECT INBOX")
	b := e.loggedIn("alice")
	b.cmd("b", "SELECT INBOX")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 100; i++ {
			b.send("s STORE 1:2 +FLAGS.SILENT (\\Deleted)\r\nx EXPUNGE\r\n")
			b.until("s")
			b.until("x")
			e.deposit("1001", "+2", 10)
		}
	}()
	for i := 0; ; i++ {
		select {
		case <-done:
			return
		default:
		}
		lines := a.until0(fmt.Sprintf("t%d STORE 1:* +FLAGS (\\Flagged)", i), fmt.Sprintf("t%d", i))
		if last := lines[len(lines)-1]; !strings.Contains(last, " OK ") {
			<-done
			t.Fatalf("STORE 1:* while another session expunges = %q, want OK", last)
		}
		a.until0(fmt.Sprintf("n%d NOOP", i), fmt.Sprintf("n%d", i))
	}
}

// TestBinaryAppendNeverSendsNUL: a part APPENDed as a binary literal with
// NUL bytes is served by BODY[] in base64 and by BINARY[] as it was sent.
func TestBinaryAppendNeverSendsNUL(t *testing.T) {
	e := newEnv(t, nil)
	r := e.loggedIn("alice")
	r.cmd("b", "CREATE Mail")
	content := " \x00-\xff\x00\r\n"
	msg := "From: a@b.org\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n" + content
	r.send(fmt.Sprintf("c APPEND Mail ~{%d+}\r\n%s\r\n", len(msg), msg))
	if l := r.until("c"); !strings.HasPrefix(l[len(l)-1], "c OK") {
		t.Fatalf("binary APPEND = %q", l)
	}
	r.cmd("d", "SELECT Mail")
	r.send("e FETCH 1 (BODY.PEEK[])\r\n")
	head := r.line()
	n, _ := strconv.Atoi(head[strings.LastIndexByte(head, '{')+1 : len(head)-1])
	body := make([]byte, n)
	if _, err := io.ReadFull(r.br, body); err != nil {
		t.Fatal(err)
	}
	r.until("e")
	if bytes.IndexByte(body, 0) >= 0 || !bytes.Contains(body, []byte("base64")) {
		t.Fatalf("BODY[] = %q, want base64 and no NUL", body)
	}
	r.send("f FETCH 1 (BINARY.PEEK[1])\r\n")
	if l := r.line(); !strings.HasSuffix(l, fmt.Sprintf("~{%d}", len(content))) {
		t.Fatalf("BINARY[1] = %q, want ~{%d}", l, len(content))
	}
	got := make([]byte, len(content))
	if _, err := io.ReadFull(r.br, got); err != nil || string(got) != content {
		t.Fatalf("BINARY[1] = %q (%v), want %q", got, err, content)
	}
	r.until("f")
}
