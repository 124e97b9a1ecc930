package imapserver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

func testMessage(i int) um.Message {
	return um.Message{
		ID: uuid.New(), Folder: um.Inbox, UID: um.UID(i + 1),
		CallerNumber: fmt.Sprintf("+49301234%04d", i), CallerName: "Caller",
		Time: time.Date(2024, 5, 1, 12, 0, i, 0, time.UTC), Duration: 7 * time.Second,
		AudioType: "audio/wav", Size: 16000,
	}
}

// TestRenderCacheBound fills the cache past its bound: the bytes charged
// stay within it, the least recently used messages go first, and a
// message seen again comes back as the same rendering.
func TestRenderCacheBound(t *testing.T) {
	const max = 64 << 10
	c := newRenderCache(max)
	opts := um.RenderOptions{}
	msgs := make([]um.Message, 100)
	for i := range msgs {
		msgs[i] = testMessage(i)
	}
	first := c.get(&msgs[0], "1001", opts)
	if again := c.get(&msgs[0], "1001", opts); again != first {
		t.Fatal("the second get of a message rendered it again")
	}
	for i := 1; i < len(msgs); i++ {
		c.get(&msgs[i], "1001", opts)
		c.get(&msgs[0], "1001", opts) // keeps message 0 the most recently used
		if _, used := c.stats(); used > max {
			t.Fatalf("after %d messages the cache charges %d bytes, over its bound %d", i+1, used, max)
		}
	}
	n, used := c.stats()
	if n >= len(msgs) || n < 2 {
		t.Fatalf("cache holds %d of %d messages (%d bytes); want some evicted, some kept", n, len(msgs), used)
	}
	if c.get(&msgs[0], "1001", opts) != first {
		t.Fatal("the most recently used message was evicted")
	}
	if r := c.items[renderKey{msgs[1].ID, "1001"}]; r != nil {
		t.Fatal("the least recently used message is still cached")
	}
	if n*itemOverhead > max {
		t.Fatalf("%d messages cached, more than the overhead alone allows", n)
	}

	// The rendering depends on the mailbox (the To header): a message is
	// cached per mailbox.
	other := c.get(&msgs[0], "1002", opts)
	if other == first || bytes.Equal(other.email.Header(), first.email.Header()) {
		t.Fatal("the rendering for another mailbox is the same")
	}
	// Flags do not change the rendering; a store handing back other
	// content under a known ID does.
	flagged := msgs[0]
	flagged.Flags, flagged.Keywords = um.FlagHeard|um.FlagFlagged, []string{"$Label1"}
	if c.get(&flagged, "1001", opts) != first {
		t.Fatal("a change of flags rendered the message again")
	}
	changed := msgs[0]
	changed.Transcript = "call me back"
	r := c.get(&changed, "1001", opts)
	if r == first || r.email.Size() == first.email.Size() {
		t.Fatal("a message with other content came from the cache")
	}
	if c.get(&changed, "1001", opts) != r {
		t.Fatal("the new content did not replace the old in the cache")
	}

	// A disabled cache renders every time and keeps nothing.
	off := newRenderCache(-1)
	if off.get(&msgs[0], "1001", opts) == off.get(&msgs[0], "1001", opts) {
		t.Fatal("a disabled cache returned a kept rendering")
	}
	if n, used := off.stats(); n != 0 || used != 0 {
		t.Fatalf("a disabled cache holds %d messages, %d bytes", n, used)
	}
}

// TestRenderCacheForget: the renderings of expunged messages leave the
// cache and give back what they were charged; those of the mailbox's other
// messages, and of the same message for another mailbox, stay.
func TestRenderCacheForget(t *testing.T) {
	c := newRenderCache(1 << 20)
	opts := um.RenderOptions{}
	msgs := []um.Message{testMessage(0), testMessage(1), testMessage(2)}
	for i := range msgs {
		c.get(&msgs[i], "1001", opts)
	}
	kept := c.get(&msgs[0], "1002", opts)
	_, before := c.stats()
	c.forget("1001", msgs[:2])
	n, used := c.stats()
	if n != 2 || c.items[renderKey{msgs[2].ID, "1001"}] == nil || c.items[renderKey{msgs[0].ID, "1002"}] != kept {
		t.Fatalf("after forgetting two of 1001's messages the cache holds %d, want 1001's third and 1002's", n)
	}
	if want := before - 2*c.items[renderKey{msgs[2].ID, "1001"}].cost; used != want {
		t.Fatalf("after forgetting two messages the cache charges %d bytes, want %d", used, want)
	}
	c.forget("1001", msgs[:2]) // gone already: nothing happens
	if n2, used2 := c.stats(); n2 != n || used2 != used {
		t.Fatalf("forgetting again changed the cache: %d messages, %d bytes", n2, used2)
	}
}

// TestRenderCacheLargeCharge checks that a message whose lazily built
// values exceed the bound leaves the cache alone rather than emptying it.
func TestRenderCacheLargeCharge(t *testing.T) {
	c := newRenderCache(32 << 10)
	a, b := testMessage(1), testMessage(2)
	ra := c.get(&a, "1001", um.RenderOptions{})
	rb := c.get(&b, "1001", um.RenderOptions{})
	c.charge(rb, 1<<20)
	if n, used := c.stats(); n != 1 || used != ra.cost {
		t.Fatalf("after an oversized charge the cache holds %d messages, %d bytes; want 1, %d", n, used, ra.cost)
	}
	if c.get(&a, "1001", um.RenderOptions{}) != ra {
		t.Fatal("an oversized charge on another message evicted this one")
	}
}

// TestCachedEnvelopesMatch fetches ENVELOPE and BODYSTRUCTURE of voicemail
// and of appended e-mail from two sessions of a server with the cache and
// from one without: all answers are equal, and the second session is
// served from the cache (one rendering per message server-wide).
func TestCachedEnvelopesMatch(t *testing.T) {
	cached := newEnv(t, nil)
	plain := newEnv(t, func(o *Options) { o.RenderCacheBytes = -1 })
	const mail = "From: Carol <carol@example.com>\r\nTo: alice@example.com\r\nSubject: note\r\n" +
		"Message-ID: <n1@example.com>\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
	for _, e := range []*env{cached, plain} {
		for i := 0; i < 3; i++ {
			// Same content, so both servers render the same bytes but for
			// the message IDs.
			e.deposit("1001", fmt.Sprintf("+4930123456%d", i), 1000*(i+1))
		}
		c := e.dial("alice", nil)
		if err := c.Create("Archive", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		ap := c.Append("Archive", int64(len(mail)), nil)
		ap.Write([]byte(mail))
		ap.Close()
		if _, err := ap.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	opts := &imap.FetchOptions{UID: true, Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true}, RFC822Size: true}
	fetch := func(e *env, folder string) []*imapFetched {
		t.Helper()
		c := e.dial("alice", nil)
		if _, err := c.Select(folder, nil).Wait(); err != nil {
			t.Fatal(err)
		}
		bufs, err := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, opts).Collect()
		if err != nil {
			t.Fatal(err)
		}
		var out []*imapFetched
		for _, b := range bufs {
			env := *b.Envelope
			env.MessageID = "" // differs: it holds the message ID
			out = append(out, &imapFetched{env: env, bs: b.BodyStructure, size: b.RFC822Size})
		}
		return out
	}
	for _, folder := range []string{"INBOX", "Archive"} {
		first := fetch(cached, folder)
		second := fetch(cached, folder)
		want := fetch(plain, folder)
		if len(first) == 0 || len(first) != len(want) {
			t.Fatalf("%s: fetched %d messages, the uncached server %d", folder, len(first), len(want))
		}
		for i := range want {
			// Boundaries and file names hold message IDs or times: compare
			// the envelopes whole and the structures' shapes and sizes.
			if !reflect.DeepEqual(first[i].env, want[i].env) || !reflect.DeepEqual(second[i].env, want[i].env) {
				t.Fatalf("%s message %d: envelopes %+v, %+v; uncached %+v", folder, i+1, first[i].env, second[i].env, want[i].env)
			}
			if first[i].size != want[i].size || second[i].size != want[i].size {
				t.Fatalf("%s message %d: sizes %d, %d; uncached %d", folder, i+1, first[i].size, second[i].size, want[i].size)
			}
			if g, w := shape(first[i].bs), shape(want[i].bs); g != w || shape(second[i].bs) != w {
				t.Fatalf("%s message %d: structure %s, uncached %s", folder, i+1, g, w)
			}
		}
	}
	if n, _ := cached.srv.cache.stats(); n != 4 {
		t.Fatalf("cache holds %d messages after two sessions fetched 4, want 4", n)
	}
	if n, _ := plain.srv.cache.stats(); n != 0 {
		t.Fatalf("disabled cache holds %d messages", n)
	}
	// The second session of each folder found what the first rendered.
	if st := cached.srv.Stats(); st.RenderCacheHits < 4 || st.RenderCacheMisses < 4 {
		t.Errorf("Stats() render cache hits %d, misses %d; want at least 4 of each", st.RenderCacheHits, st.RenderCacheMisses)
	}
	if st := plain.srv.Stats(); st.RenderCacheHits != 0 {
		t.Errorf("disabled cache: Stats() render cache hits %d, want 0", st.RenderCacheHits)
	}
}

type imapFetched struct {
	env  imap.Envelope
	bs   imap.BodyStructure
	size int64
}

// shape describes a body structure by type, encoding and size of each part.
func shape(bs imap.BodyStructure) string {
	switch p := bs.(type) {
	case *imap.BodyStructureMultiPart:
		var parts []string
		for _, c := range p.Children {
			parts = append(parts, shape(c))
		}
		return "multipart/" + p.Subtype + "(" + strings.Join(parts, " ") + ")"
	case *imap.BodyStructureSinglePart:
		return fmt.Sprintf("%s/%s;%s;%d", p.Type, p.Subtype, p.Encoding, p.Size)
	}
	return fmt.Sprintf("%T", bs)
}

// TestStatusSizeMatchesFetch checks that STATUS (SIZE) of the voicemail
// folder is the sum of the RFC822.SIZE that FETCH reports, with and
// without the messages in the cache. The mailbox name is longer than
// "undisclosed-recipients:;", the To of a rendering without one.
func TestStatusSizeMatchesFetch(t *testing.T) {
	const mailbox = "voicemail-of-alice"
	e := newEnv(t, func(o *Options) {
		o.Authenticate = func(context.Context, string, string) (string, error) { return mailbox, nil }
	})
	if _, err := e.svc.CreateMailbox(context.Background(), mailbox); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		e.deposit(mailbox, fmt.Sprintf("+4930123456%d", i), 500*(i+1))
	}
	c := e.dial("alice", nil)
	status := func() int64 {
		t.Helper()
		st, err := c.Status("INBOX", &imap.StatusOptions{Size: true}).Wait()
		if err != nil {
			t.Fatal(err)
		}
		return *st.Size
	}
	before := status()
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	bufs, err := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{RFC822Size: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, b := range bufs {
		sum += b.RFC822Size
	}
	if len(bufs) != 3 || before != sum {
		t.Fatalf("STATUS SIZE = %d before any FETCH, FETCH RFC822.SIZE of %d messages sums to %d", before, len(bufs), sum)
	}
	if after := status(); after != sum {
		t.Fatalf("STATUS SIZE = %d with the messages cached, want %d", after, sum)
	}
}

// countingConn counts the writes that reach the network.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var srv net.Conn
	var aerr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv, aerr = ln.Accept() }()
	cli, err := net.Dial("tcp", ln.Addr().String())
	wg.Wait()
	if err != nil || aerr != nil {
		t.Fatal(err, aerr)
	}
	t.Cleanup(func() { srv.Close(); cli.Close() })
	cli.SetDeadline(time.Now().Add(10 * time.Second))
	return srv, cli
}

// TestWriteBehind checks the connection's output batching: writes are
// held until the server reads (then sent in one write), go out at once
// while a read waits (IDLE), go out when too much is pending, are sent
// by Close and dropped by abort.
func TestWriteBehind(t *testing.T) {
	e := newEnv(t, nil)
	srvSide, peer := tcpPair(t)
	cc := &countingConn{Conn: srvSide}
	nc := newNetConn(cc, e.srv, "127.0.0.1")

	nc.Write([]byte("* one\r\n"))
	nc.Write([]byte("* two\r\n"))
	if n := cc.writes.Load(); n != 0 {
		t.Fatalf("%d writes reached the network before the server read", n)
	}
	peer.Write([]byte("a NOOP\r\n"))
	buf := make([]byte, 64)
	if n, err := nc.Read(buf); err != nil || string(buf[:n]) != "a NOOP\r\n" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	if n := cc.writes.Load(); n != 1 {
		t.Fatalf("the held output took %d writes, want 1", n)
	}
	got := make([]byte, len("* one\r\n* two\r\n"))
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "* one\r\n* two\r\n" {
		t.Fatalf("peer read %q, %v", got, err)
	}

	// While a read waits, a write goes straight out.
	done := make(chan error, 1)
	go func() {
		_, err := nc.Read(buf)
		done <- err
	}()
	waitFor(t, "the read to wait", func() bool {
		nc.wmu.Lock()
		defer nc.wmu.Unlock()
		return nc.reading == 1
	})
	nc.Write([]byte("* 3 EXISTS\r\n"))
	got = make([]byte, len("* 3 EXISTS\r\n"))
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "* 3 EXISTS\r\n" {
		t.Fatalf("peer read %q, %v during the read", got, err)
	}
	peer.Write([]byte("DONE\r\n"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Output that outgrows the small buffer first taken is still held,
	// in order, and goes out in one write.
	before := cc.writes.Load()
	var held bytes.Buffer
	for i := 0; held.Len() < 3*writeBehindSmall; i++ {
		line := fmt.Appendf(nil, "* %d FETCH (UID %d)\r\n", i, i)
		held.Write(line)
		nc.Write(line)
	}
	if n := cc.writes.Load() - before; n != 0 {
		t.Fatalf("%d writes of %d bytes held reached the network before a read", n, held.Len())
	}
	if err := nc.flush(); err != nil {
		t.Fatal(err)
	}
	if n := cc.writes.Load() - before; n != 1 {
		t.Fatalf("%d bytes held took %d network writes, want 1", held.Len(), n)
	}
	got = make([]byte, held.Len())
	if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, held.Bytes()) {
		t.Fatalf("peer read %d bytes (%v), not the %d held, in order", len(got), err, held.Len())
	}

	// Past writeBehindMax the pending output goes out without a read.
	before = cc.writes.Load()
	big := bytes.Repeat([]byte("x"), 40<<10)
	nc.Write(big)
	nc.Write(big)
	if n := cc.writes.Load() - before; n != 1 {
		t.Fatalf("two writes of 40 KiB took %d network writes before a read, want 1", n)
	}
	nc.Write([]byte("a OK done\r\n"))
	nc.Close()
	all, err := io.ReadAll(peer)
	if err != nil || len(all) != 2*len(big)+len("a OK done\r\n") || !bytes.HasSuffix(all, []byte("a OK done\r\n")) {
		t.Fatalf("after Close the peer read %d bytes, %v; want %d ending in the held response", len(all), err, 2*len(big)+11)
	}

	// abort drops what is held.
	srv2, peer2 := tcpPair(t)
	nc2 := newNetConn(srv2, e.srv, "127.0.0.1")
	nc2.Write([]byte("* never\r\n"))
	nc2.abort()
	if all, err := io.ReadAll(peer2); err != nil || len(all) != 0 {
		t.Fatalf("after abort the peer read %q, %v; want nothing", all, err)
	}
	if _, err := nc2.Write([]byte("x")); err == nil {
		t.Fatal("Write after abort succeeded")
	}
}

// TestPipelinedSession sends a whole session in one write over TLS: every
// response, the LOGOUT's BYE and OK among them (held until Close), reaches
// the client.
func TestPipelinedSession(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 5; i++ {
		e.deposit("1001", "+4930123456", 2000)
	}
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.send("a LOGIN alice alice-pw\r\nb SELECT INBOX\r\nc FETCH 1:* (UID FLAGS ENVELOPE RFC822.SIZE)\r\n" +
		"d UID FETCH 1:* (BODY.PEEK[])\r\ne NOOP\r\nf LOGOUT\r\n")
	lines := r.until("f")
	var fetched, oks int
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "* ") && strings.Contains(l, " FETCH (UID "):
			fetched++
		case len(l) > 2 && l[0] != '*' && l[1] == ' ' && strings.Contains(l, " OK "):
			oks++
		}
	}
	if fetched != 10 || oks != 6 || !strings.HasPrefix(lines[len(lines)-1], "f OK") {
		t.Fatalf("pipelined session: %d FETCH responses (want 10), %d tagged OK (want 6), last %q", fetched, oks, lines[len(lines)-1])
	}
	if !r.closed() {
		t.Fatal("connection still open after LOGOUT")
	}
}

// TestExpungeForgetsRenderings: EXPUNGE drops the expunged messages'
// renderings from the render cache; the folder's other messages keep
// theirs.
func TestExpungeForgetsRenderings(t *testing.T) {
	e := newEnv(t, nil)
	r := e.loggedIn("alice")
	if got := r.cmd("b", "CREATE Notes"); !strings.HasPrefix(got, "b OK") {
		t.Fatalf("CREATE = %q", got)
	}
	for i := range 2 {
		msg := fmt.Sprintf("From: a@example.com\r\nSubject: note %d\r\n\r\nbody\r\n", i)
		if got := r.cmd("c", fmt.Sprintf("APPEND Notes {%d+}\r\n%s", len(msg), msg)); !strings.HasPrefix(got, "c OK") {
			t.Fatalf("APPEND = %q", got)
		}
	}
	if got := r.cmd("d", "SELECT Notes"); !strings.HasPrefix(got, "d OK") {
		t.Fatalf("SELECT = %q", got)
	}
	if got := r.cmd("f", "FETCH 1:2 (ENVELOPE)"); !strings.HasPrefix(got, "f OK") {
		t.Fatalf("FETCH = %q", got)
	}
	msgs := e.list("1001", "Notes")
	cached := func(i int) bool {
		e.srv.cache.mu.Lock()
		defer e.srv.cache.mu.Unlock()
		return e.srv.cache.items[renderKey{msgs[i].ID, "1001"}] != nil
	}
	if len(msgs) != 2 || !cached(0) || !cached(1) {
		t.Fatalf("after FETCH ENVELOPE of %d messages, cached: %v", len(msgs), len(msgs) == 2 && cached(0) && cached(1))
	}
	if got := r.cmd("g", `STORE 1 +FLAGS.SILENT (\Deleted)`); !strings.HasPrefix(got, "g OK") {
		t.Fatalf("STORE = %q", got)
	}
	if got := r.cmd("h", "EXPUNGE"); !strings.HasPrefix(got, "h OK") {
		t.Fatalf("EXPUNGE = %q", got)
	}
	if cached(0) {
		t.Error("the expunged message's rendering is still cached")
	}
	if !cached(1) {
		t.Error("the message left in the folder lost its cached rendering")
	}
}
