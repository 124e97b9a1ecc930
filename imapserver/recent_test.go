package imapserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/loopback"
)

// The tests in this file are the \Recent rules of RFC 3501 2.3.2 as
// Dovecot keeps them: a message is recent in exactly one session, the
// first to select its folder read-write after it arrived, or the one that
// has the folder selected when it arrives.

// run sends a command and returns every line up to its tagged response,
// which must be OK.
func (r *raw) run(tag, command string) []string {
	r.t.Helper()
	lines := r.until0(tag+" "+command, tag)
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, tag+" OK") {
		r.t.Fatalf("%s = %q", command, lines)
	}
	return lines
}

// recentCount returns n of the "* n RECENT" among lines, or -1 when there
// is none.
func recentCount(lines []string) int {
	n := -1
	for _, l := range lines {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "*" && strings.EqualFold(f[2], "RECENT") {
			n, _ = strconv.Atoi(f[1])
		}
	}
	return n
}

// searchHits returns the numbers of the "* SEARCH" among lines.
func searchHits(lines []string) []int {
	var out []int
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(l, "* SEARCH"); ok {
			for _, f := range strings.Fields(rest) {
				n, _ := strconv.Atoi(f)
				out = append(out, n)
			}
		}
	}
	return out
}

// recentSeqs returns the sequence numbers whose FETCH FLAGS among lines
// hold \Recent.
func recentSeqs(lines []string) []int {
	var out []int
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 3 && f[0] == "*" && f[2] == "FETCH" && strings.Contains(l, `\Recent`) {
			n, _ := strconv.Atoi(f[1])
			out = append(out, n)
		}
	}
	return out
}

func wantInts(t *testing.T, what string, got []int, want ...int) {
	t.Helper()
	if !slices.Equal(got, want) && !(len(got) == 0 && len(want) == 0) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func wantRecent(t *testing.T, what string, lines []string, want int) {
	t.Helper()
	if got := recentCount(lines); got != want {
		t.Errorf("%s: RECENT = %d, want %d (-1: none sent); lines %q", what, got, want, lines)
	}
}

func TestRecentFirstSelectTakesIt(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 10)
	e.deposit("1001", "+2", 10)
	a, b := e.loggedIn("alice"), e.loggedIn("alice")

	wantRecent(t, "first SELECT", a.run("s", "SELECT INBOX"), 2)
	wantInts(t, "first session's \\Recent", recentSeqs(a.run("f", "FETCH 1:* FLAGS")), 1, 2)
	wantInts(t, "first session's SEARCH RECENT", searchHits(a.run("r", "SEARCH RECENT")), 1, 2)

	wantRecent(t, "second SELECT", b.run("s", "SELECT INBOX"), 0)
	wantInts(t, "second session's \\Recent", recentSeqs(b.run("f", "FETCH 1:* FLAGS")))
	wantInts(t, "second session's SEARCH RECENT", searchHits(b.run("r", "SEARCH RECENT")))

	// Closing the folder ends the session's recency: nobody has the
	// messages as recent any more, the session itself neither.
	a.run("u", "UNSELECT")
	wantRecent(t, "SELECT again", a.run("s2", "SELECT INBOX"), 0)
	if got := statusItem(t, b.run("st", "STATUS INBOX (RECENT)"), "RECENT"); got != 0 {
		t.Errorf("STATUS RECENT after both selected = %d, want 0", got)
	}
}

func TestRecentArrivalGoesToTheSelectedSession(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 10)
	a, b := e.loggedIn("alice"), e.loggedIn("alice")
	wantRecent(t, "a SELECT", a.run("s", "SELECT INBOX"), 1)
	wantRecent(t, "b SELECT", b.run("s", "SELECT INBOX"), 0)

	// The deposit arrives while both have INBOX selected: the first to
	// hear of it takes it, and tells RECENT with EXISTS.
	e.deposit("1001", "+2", 10)
	lines := a.run("n", "NOOP")
	if !slices.Contains(lines, "* 2 EXISTS") {
		t.Fatalf("NOOP after a deposit = %q, want * 2 EXISTS", lines)
	}
	wantRecent(t, "a NOOP", lines, 2)
	wantInts(t, "a's \\Recent", recentSeqs(a.run("f", "FETCH 1:* FLAGS")), 1, 2)

	lines = b.run("n", "NOOP")
	if !slices.Contains(lines, "* 2 EXISTS") {
		t.Fatalf("b NOOP after a deposit = %q, want * 2 EXISTS", lines)
	}
	wantRecent(t, "b NOOP (its count stays 0)", lines, -1)
	wantInts(t, "b's \\Recent", recentSeqs(b.run("f", "FETCH 1:* FLAGS")))
	// A third session finds nothing recent either.
	c := e.loggedIn("alice")
	wantRecent(t, "c SELECT", c.run("s", "SELECT INBOX"), 0)
}

func TestRecentExamineLeavesIt(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 10)
	e.deposit("1001", "+2", 10)
	r := e.loggedIn("alice")

	// EXAMINE shows what nobody took as recent, and leaves it so.
	wantRecent(t, "EXAMINE", r.run("x", "EXAMINE INBOX"), 2)
	wantInts(t, "EXAMINE's \\Recent", recentSeqs(r.run("f", "FETCH 1:* FLAGS")), 1, 2)
	wantInts(t, "EXAMINE's SEARCH NEW", searchHits(r.run("n", "SEARCH NEW")), 1, 2)
	r.run("c", "CLOSE")
	if got := statusItem(t, r.run("st", "STATUS INBOX (MESSAGES RECENT)"), "RECENT"); got != 2 {
		t.Errorf("STATUS RECENT after EXAMINE = %d, want 2", got)
	}
	other := e.loggedIn("alice")
	wantRecent(t, "another session's EXAMINE", other.run("x", "EXAMINE INBOX"), 2)

	// SELECT takes them: STATUS says so from then on, for the session
	// that has them (its own recent messages count) and for others.
	wantRecent(t, "SELECT", r.run("s", "SELECT INBOX"), 2)
	if got := statusItem(t, r.run("st", "STATUS INBOX (RECENT)"), "RECENT"); got != 2 {
		t.Errorf("STATUS RECENT of its own selected folder = %d, want 2", got)
	}
	if got := statusItem(t, e.loggedIn("alice").run("st", "STATUS INBOX (RECENT)"), "RECENT"); got != 0 {
		t.Errorf("STATUS RECENT in another session = %d, want 0", got)
	}
	r.run("c2", "CLOSE")
	if got := statusItem(t, r.run("st2", "STATUS INBOX (RECENT)"), "RECENT"); got != 0 {
		t.Errorf("STATUS RECENT after SELECT and CLOSE = %d, want 0", got)
	}
	// The EXAMINE session still sees them as it saw them at EXAMINE.
	wantInts(t, "earlier EXAMINE's \\Recent", recentSeqs(other.run("f", "FETCH 1:* FLAGS")), 1, 2)
	// A deposit an EXAMINE session hears of is recent for it and stays
	// there for the next SELECT.
	e.deposit("1001", "+3", 10)
	lines := other.run("n", "NOOP")
	wantRecent(t, "EXAMINE session's NOOP", lines, 3)
	wantRecent(t, "SELECT after", r.run("s3", "SELECT INBOX"), 1)
}

// statusItem returns the value of item in the STATUS response among lines.
func statusItem(t *testing.T, lines []string, item string) int {
	t.Helper()
	for _, l := range lines {
		if !strings.HasPrefix(l, "* STATUS ") {
			continue
		}
		_, list, _ := strings.Cut(l, "(")
		f := strings.Fields(strings.TrimSuffix(list, ")"))
		for i := 0; i+1 < len(f); i += 2 {
			if strings.EqualFold(f[i], item) {
				n, _ := strconv.Atoi(f[i+1])
				return n
			}
		}
	}
	t.Fatalf("no %s in STATUS %q", item, lines)
	return 0
}

func TestRecentCopyAndAppendArrive(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 10)
	e.deposit("1001", "+2", 10)
	if _, err := e.mailbox("1001").CreateFolder(context.Background(), "Kept"); err != nil {
		t.Fatal(err)
	}
	a, b := e.loggedIn("alice"), e.loggedIn("alice")
	a.run("s", "SELECT INBOX")

	// Copies into a folder nobody has selected are recent for the next
	// session that selects it.
	a.run("c", "COPY 1:2 Kept")
	if got := statusItem(t, b.run("st", "STATUS Kept (RECENT)"), "RECENT"); got != 2 {
		t.Errorf("STATUS RECENT of the copies = %d, want 2", got)
	}
	wantRecent(t, "SELECT of the copies", b.run("s", "SELECT Kept"), 2)

	// A copy into the folder another session has selected is that
	// session's, as is an APPEND.
	a.run("c2", "COPY 1 Kept")
	msg := "Subject: hi\r\n\r\nhello\r\n"
	a.run("ap", fmt.Sprintf("APPEND Kept {%d+}\r\n%s", len(msg), msg))
	lines := b.run("n", "NOOP")
	if !slices.Contains(lines, "* 4 EXISTS") {
		t.Fatalf("NOOP = %q, want * 4 EXISTS", lines)
	}
	wantRecent(t, "NOOP after COPY and APPEND", lines, 4)
	wantInts(t, "\\Recent in Kept", recentSeqs(b.run("f", "FETCH 1:* FLAGS")), 1, 2, 3, 4)

	// A session's own COPY or APPEND into its selected folder is recent
	// for itself.
	lines = a.run("c3", "COPY 2 INBOX")
	lines = append(lines, a.run("ap2", fmt.Sprintf("APPEND Kept {%d+}\r\n%s", len(msg), msg))...)
	lines = append(lines, a.run("n", "NOOP")...)
	if !slices.Contains(lines, "* 3 EXISTS") {
		t.Fatalf("COPY into the selected folder = %q, want * 3 EXISTS", lines)
	}
	wantRecent(t, "own COPY into the selected folder", lines, 3)
	wantInts(t, "own \\Recent", recentSeqs(a.run("f", "FETCH 3 FLAGS")), 3)
	wantRecent(t, "SELECT INBOX elsewhere", e.loggedIn("alice").run("s", "SELECT INBOX"), 0)
}

func TestRecentSearchNewOld(t *testing.T) {
	e := newEnv(t, nil)
	for i := range 3 {
		e.deposit("1001", "+"+strconv.Itoa(i), 10)
	}
	r := e.loggedIn("alice")
	r.run("s", "SELECT INBOX")
	e.deposit("1001", "+3", 10)
	r.run("n", "NOOP")
	r.run("st", `STORE 2 +FLAGS.SILENT (\Seen)`)
	wantInts(t, "SEARCH RECENT", searchHits(r.run("a", "SEARCH RECENT")), 1, 2, 3, 4)
	wantInts(t, "SEARCH NEW (recent, unseen)", searchHits(r.run("b", "SEARCH NEW")), 1, 3, 4)
	wantInts(t, "SEARCH OLD", searchHits(r.run("c", "SEARCH OLD")))
	wantInts(t, "SEARCH NOT RECENT", searchHits(r.run("d", "SEARCH NOT RECENT")))

	// An EXPUNGE of a recent message changes the count, and RECENT says so.
	r.run("dl", `STORE 4 +FLAGS.SILENT (\Deleted)`)
	lines := r.run("x", "EXPUNGE")
	if !slices.Contains(lines, "* 4 EXPUNGE") {
		t.Fatalf("EXPUNGE = %q, want * 4 EXPUNGE", lines)
	}
	wantRecent(t, "EXPUNGE of a recent message", lines, 3)

	o := e.loggedIn("alice")
	o.run("s", "SELECT INBOX")
	wantInts(t, "another session's SEARCH OLD", searchHits(o.run("a", "SEARCH OLD")), 1, 2, 3)
	wantInts(t, "another session's SEARCH NEW", searchHits(o.run("b", "SEARCH NEW")))
	wantInts(t, "another session's SEARCH UNSEEN", searchHits(o.run("c", "SEARCH UNSEEN")), 1, 3)
}

func TestRecentIsNotStored(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 10)
	a, b := e.loggedIn("alice"), e.loggedIn("alice")
	a.run("s", "SELECT INBOX")
	b.run("s", "SELECT INBOX")

	// A STORE answers with \Recent where it holds, and neither removes
	// nor gives it.
	lines := a.run("r", `STORE 1 FLAGS (\Seen)`)
	wantInts(t, "STORE FLAGS on a recent message", recentSeqs(lines), 1)
	wantInts(t, "STORE -FLAGS (\\Recent)", recentSeqs(a.run("m", `STORE 1 -FLAGS (\Recent)`)), 1)
	wantInts(t, "STORE +FLAGS (\\Recent) elsewhere", recentSeqs(b.run("p", `STORE 1 +FLAGS (\Recent)`)))
	wantInts(t, "a's \\Recent after the STOREs", recentSeqs(a.run("f", "FETCH 1 FLAGS")), 1)
	if got := strings.Join(b.run("f", "FETCH 1 FLAGS"), "|"); !strings.Contains(got, `FLAGS (\Seen)`) {
		t.Errorf("b's FETCH = %q, want FLAGS (\\Seen) only", got)
	}
	// An APPEND's \Recent is no flag a message keeps either.
	msg := "Subject: hi\r\n\r\nhello\r\n"
	b.run("c", "CREATE Mine")
	b.run("a", fmt.Sprintf(`APPEND Mine (\Recent \Flagged) {%d+}`+"\r\n%s", len(msg), msg))
	b.run("x", "EXAMINE Mine")
	if got := strings.Join(b.run("f", "FETCH 1 FLAGS"), "|"); !strings.Contains(got, `FLAGS (\Flagged \Recent)`) {
		t.Errorf("FETCH of the APPENDed message = %q, want \\Flagged and the \\Recent of its arrival", got)
	}
}

func TestRecentNotInIMAP4rev2(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 10)
	r := e.loggedIn("alice")
	r.run("e", "ENABLE IMAP4rev2")
	// IMAP4rev2 has no \Recent: no RECENT response, no flag, and the
	// session takes nothing from rev1 sessions.
	wantRecent(t, "rev2 SELECT", r.run("s", "SELECT INBOX"), -1)
	e.deposit("1001", "+2", 10)
	lines := r.run("n", "NOOP")
	wantRecent(t, "rev2 NOOP", lines, -1)
	if got := strings.Join(r.run("f", "FETCH 1:* FLAGS"), "|"); strings.Contains(got, `\Recent`) {
		t.Errorf("rev2 FETCH FLAGS = %q, want no \\Recent", got)
	}
	wantRecent(t, "rev1 SELECT after the rev2 one", e.loggedIn("alice").run("s", "SELECT INBOX"), 2)
}

func TestRecentFollowsTheFolder(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 10)
	r := e.loggedIn("alice")
	r.run("c", "CREATE Old")
	r.run("s", "SELECT INBOX")
	r.run("cp", "COPY 1 Old")
	r.run("s2", "SELECT Old")
	r.run("u", "UNSELECT")

	// RENAME keeps the folder and what was taken of it.
	r.run("mv", "RENAME Old New")
	wantRecent(t, "SELECT of the renamed folder", e.loggedIn("alice").run("s", "SELECT New"), 0)

	// A folder created again under a name is another folder (another
	// UIDVALIDITY): its messages are recent again.
	r.run("d", "DELETE New")
	r.run("c2", "CREATE New")
	r.run("s3", "SELECT INBOX")
	r.run("cp2", "COPY 1 New")
	wantRecent(t, "SELECT of the new folder", e.loggedIn("alice").run("s", "SELECT New"), 1)
}

// recentClient is a connection the concurrency test drives from its own
// goroutine: its errors are returned, not fatal.
type recentClient struct {
	c  net.Conn
	br *bufio.Reader
	n  int
}

func dialRecentClient(addr string, conf *tls.Config, user, pass string) (*recentClient, error) {
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		return nil, err
	}
	rc := &recentClient{c: c, br: bufio.NewReader(c)}
	if _, err := rc.line(); err != nil {
		c.Close()
		return nil, err
	}
	if _, err := rc.run("LOGIN " + user + " " + pass); err != nil {
		c.Close()
		return nil, err
	}
	return rc, nil
}

func (rc *recentClient) line() (string, error) {
	rc.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	l, err := rc.br.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

func (rc *recentClient) run(command string) ([]string, error) {
	rc.n++
	tag := "t" + strconv.Itoa(rc.n)
	if _, err := rc.c.Write([]byte(tag + " " + command + "\r\n")); err != nil {
		return nil, err
	}
	var lines []string
	for {
		l, err := rc.line()
		if err != nil {
			return lines, err
		}
		lines = append(lines, l)
		if strings.HasPrefix(l, tag+" ") {
			if !strings.HasPrefix(l, tag+" OK") {
				return lines, fmt.Errorf("%s: %s", command, l)
			}
			return lines, nil
		}
	}
}

// recentUIDs returns what the session has as recent, by UID. The
// server tells new messages after the SEARCH results, and takes them for
// the session as it does: the SEARCH is repeated until it tells none, so
// the answer is all the session holds.
func (rc *recentClient) recentUIDs() ([]int, error) {
	for {
		lines, err := rc.run("UID SEARCH RECENT")
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasSuffix(l, " EXISTS") }) {
			return searchHits(lines), nil
		}
	}
}

// TestRecentOneSessionEach: many sessions SELECT a folder at once and
// again while deposits arrive; every message is recent in exactly one of
// them, counted over every selection each session made.
func TestRecentOneSessionEach(t *testing.T) {
	e := newEnv(t, func(o *Options) { o.MaxConnsPerUser = -1; o.MaxConnsPerIP = -1 })
	const sessions, before, during, rounds = 12, 20, 40, 6
	for i := range before {
		e.deposit("1001", "+"+strconv.Itoa(i), 10)
	}
	clients := make([]*recentClient, sessions)
	for i := range clients {
		rc, err := dialRecentClient(e.tlsAddr, e.clientTLS, "alice", users["alice"].password)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rc.c.Close() })
		clients[i] = rc
	}

	var mu sync.Mutex
	owners := map[int][]int{} // UID -> the sessions (index) that had it recent
	selectCounts := 0         // the sum of the RECENT counts SELECT gave
	record := func(i int, uids []int) {
		mu.Lock()
		defer mu.Unlock()
		for _, u := range uids {
			owners[u] = append(owners[u], i)
		}
	}

	start := make(chan struct{})
	depositsDone := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, sessions+1)
	mb := e.mailbox("1001")
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(depositsDone)
		<-start
		for i := range during {
			if _, err := mb.Deposit(context.Background(), depositOf(silence(10), "+9"+strconv.Itoa(i))); err != nil {
				errs <- err
				return
			}
		}
	}()
	for i, rc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := func() error {
				<-start
				selects := 0
				for {
					lines, err := rc.run("SELECT INBOX")
					if err != nil {
						return err
					}
					mu.Lock()
					selectCounts += max(recentCount(lines), 0)
					mu.Unlock()
					selects++
					if _, err := rc.run("NOOP"); err != nil {
						return err
					}
					select {
					case <-depositsDone:
					default:
						if selects < rounds {
							// What this selection had is lost at the
							// next SELECT: record it first.
							uids, err := rc.recentUIDs()
							if err != nil {
								return err
							}
							record(i, uids)
							continue
						}
					}
					return nil
				}
			}()
			if err != nil {
				errs <- fmt.Errorf("session %d: %w", i, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Every session still has the folder selected: a last NOOP brings
	// each what it still has to hear of, and says what it holds.
	for i, rc := range clients {
		if _, err := rc.run("NOOP"); err != nil {
			t.Fatal(err)
		}
		uids, err := rc.recentUIDs()
		if err != nil {
			t.Fatal(err)
		}
		record(i, uids)
	}
	msgs := e.list("1001", um.Inbox)
	if len(msgs) != before+during {
		t.Fatalf("INBOX holds %d messages, want %d", len(msgs), before+during)
	}
	for _, m := range msgs {
		if got := owners[int(m.UID)]; len(got) != 1 {
			t.Errorf("UID %d was recent in sessions %v, want exactly one", m.UID, got)
		}
	}
	if len(owners) != len(msgs) {
		t.Errorf("%d UIDs were recent, want %d", len(owners), len(msgs))
	}
	holders := map[int]bool{}
	for _, ss := range owners {
		for _, i := range ss {
			holders[i] = true
		}
	}
	t.Logf("%d messages, recent in %d of %d sessions; SELECTs counted %d", len(msgs), len(holders), sessions, selectCounts)
	if selectCounts > len(msgs) {
		t.Errorf("SELECTs counted %d recent messages in all, more than the %d there are", selectCounts, len(msgs))
	}
}

// TestRecentTableTakesEachUIDOnce: the server's record hands each UID of
// a folder to one caller, however many take at once, and starts again
// for a folder of another UIDVALIDITY.
func TestRecentTableTakesEachUIDOnce(t *testing.T) {
	var tab recentTable
	const callers, top = 8, 2000
	got := make([][]um.UID, callers)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for upTo := um.UID(c + 1); upTo <= top; upTo += callers {
				from := tab.take("1001", um.Inbox, 7, upTo)
				for u := from + 1; u <= upTo; u++ {
					got[c] = append(got[c], u)
				}
			}
		}()
	}
	wg.Wait()
	seen := make(map[um.UID]int)
	for _, uids := range got {
		for _, u := range uids {
			seen[u]++
		}
	}
	for u := um.UID(1); u <= top; u++ {
		if seen[u] != 1 {
			t.Fatalf("UID %d taken %d times, want once", u, seen[u])
		}
	}
	if n := tab.taken("1001", um.Inbox, 7); n != top {
		t.Errorf("taken() = %d, want %d", n, top)
	}
	if n := tab.taken("1001", um.Inbox, 8); n != 0 {
		t.Errorf("taken() of another UIDVALIDITY = %d, want 0", n)
	}
	if from := tab.take("1001", um.Inbox, 8, 5); from != 0 {
		t.Errorf("take() in a folder created again = %d, want 0", from)
	}
	if n := tab.taken("1002", um.Inbox, 8); n != 0 {
		t.Errorf("taken() of another voice mailbox = %d, want 0", n)
	}
	tab.rename("1001", um.Inbox, "Other")
	if n := tab.taken("1001", "Other", 8); n != 5 {
		t.Errorf("taken() after rename = %d, want 5", n)
	}
	tab.forget("1001", "Other")
	if n := tab.taken("1001", "Other", 8); n != 0 {
		t.Errorf("taken() after forget = %d, want 0", n)
	}
}

// TestRecentPerServer: the record of what was taken is the Server's, so
// a second Server, as another node of a cluster has, gives a message to
// its own first session too (the approximation doc.go describes), while
// the sessions of each Server share theirs.
func TestRecentPerServer(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 10)
	other, err := New(e.svc, &Options{
		Authenticate: func(ctx context.Context, user, pass string) (string, error) {
			return users["alice"].mailbox, nil
		},
		InsecureAuth:      true,
		LoginFailureDelay: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := loopback.Serve(other)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		other.Close()
		l.Wait()
	})
	login := func() *raw {
		r := dialRaw(t, l.PlainAddr, nil)
		r.run("l", "LOGIN alice x")
		return r
	}

	wantRecent(t, "first SELECT on this server", e.loggedIn("alice").run("s", "SELECT INBOX"), 1)
	wantRecent(t, "second SELECT on this server", e.loggedIn("alice").run("s", "SELECT INBOX"), 0)
	wantRecent(t, "first SELECT on the other server", login().run("s", "SELECT INBOX"), 1)
	wantRecent(t, "second SELECT on the other server", login().run("s", "SELECT INBOX"), 0)
}
