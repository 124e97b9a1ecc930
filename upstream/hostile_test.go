package upstream_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/internal/selfsigned"
	"github.com/embeddedum/um/upstream"
	"github.com/emersion/go-imap/v2"
)

// hostile is a mail server that lies: a proxy on loopback that ends TLS,
// talks to a real Dovecot in plaintext, and rewrites Dovecot's responses
// the way its current mode says (see hostileModes). With mode "" it is an
// honest proxy.
type hostile struct {
	tb      testing.TB
	ln      net.Listener
	backend string
	cert    *selfsigned.Cert

	mode atomic.Pointer[string]
	// before, when set, sees each command line of the engine's before
	// Dovecot does.
	before atomic.Pointer[func(line string)]
	conns  atomic.Int32 // connections accepted
	mu     sync.Mutex
	cmds   []string          // command lines the engine sent
	open   map[net.Conn]bool // connections being served
}

func startHostile(tb testing.TB, d *dovecot.Server) *hostile {
	tb.Helper()
	cert, err := selfsigned.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cert.ServerConfig())
	if err != nil {
		tb.Fatal(err)
	}
	h := &hostile{tb: tb, ln: ln, backend: d.Addr, cert: cert, open: make(map[net.Conn]bool)}
	h.setMode("")
	tb.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.conns.Add(1)
			go h.serve(c)
		}
	}()
	return h
}

func (h *hostile) setMode(m string) { h.mode.Store(&m) }

func (h *hostile) commands(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.cmds {
		if _, rest, ok := strings.Cut(c, " "); ok && strings.HasPrefix(strings.ToUpper(rest), prefix) {
			n++
		}
	}
	return n
}

var (
	literalRE   = regexp.MustCompile(`\{(\d+)\+?\}\r\n$`)
	validityRE  = regexp.MustCompile(`\[UIDVALIDITY \d+\]`)
	appendUIDRE = regexp.MustCompile(`\[APPENDUID \d+ \d+\] ?`)
	copyUIDRE   = regexp.MustCompile(`\[COPYUID (\d+) (\S+) \S+\]`)
	lieUIDRE    = regexp.MustCompile(`\[APPENDUID (\d+) (\d+)\]`)
	flagsRE     = regexp.MustCompile(` ?FLAGS \([^)]*\)`)
)

// flood writes n bytes of filler (all of them, or until the peer goes).
func flood(w io.Writer, b byte, n int64) {
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = b
	}
	for n > 0 {
		k := min(n, int64(len(buf)))
		if _, err := w.Write(buf[:k]); err != nil {
			return
		}
		n -= k
	}
}

// floodLines writes the lines line(0), line(1), ... until they add up to n
// bytes or the peer goes.
func floodLines(w io.Writer, line func(i int) string, n int) {
	var buf []byte
	for i := 0; n > 0; i++ {
		buf = append(buf, line(i)...)
		if len(buf) >= 64<<10 {
			if _, err := w.Write(buf); err != nil {
				return
			}
			n -= len(buf)
			buf = buf[:0]
		}
	}
}

func (h *hostile) serve(c net.Conn) {
	h.mu.Lock()
	h.open[c] = true
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.open, c)
		h.mu.Unlock()
		c.Close()
	}()
	b, err := net.Dial("tcp", h.backend)
	if err != nil {
		return
	}
	defer b.Close()
	var searchTag atomic.Pointer[string] // of the last UID SEARCH on this connection
	// The commands of this connection not yet answered, oldest first:
	// Dovecot answers pipelined commands in order, so the first is the one
	// an untagged response belongs to.
	var qmu sync.Mutex
	var queue [][2]string // tag, command
	current := func() string {
		qmu.Lock()
		defer qmu.Unlock()
		if len(queue) == 0 {
			return ""
		}
		return queue[0][1]
	}
	go func() {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				b.Close()
				return
			}
			h.mu.Lock()
			h.cmds = append(h.cmds, line)
			h.mu.Unlock()
			if tag, rest, ok := strings.Cut(line, " "); ok {
				// Lines without a space are no commands: DONE, SASL.
				qmu.Lock()
				queue = append(queue, [2]string{tag, strings.ToUpper(rest)})
				qmu.Unlock()
				if strings.HasPrefix(strings.ToUpper(rest), "UID SEARCH") {
					searchTag.Store(&tag)
				}
			}
			if f := h.before.Load(); f != nil {
				(*f)(line)
			}
			io.WriteString(b, line)
			if m := literalRE.FindStringSubmatch(line); m != nil {
				n, _ := strconv.ParseInt(m[1], 10, 64)
				if _, err := io.CopyN(b, br, n); err != nil {
					return
				}
			}
		}
	}()
	br := bufio.NewReader(b)
	silent := false
	greeting := true
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		var lit []byte
		if m := literalRE.FindStringSubmatch(line); m != nil {
			n, _ := strconv.ParseInt(m[1], 10, 64)
			lit = make([]byte, n)
			if _, err := io.ReadFull(br, lit); err != nil {
				return
			}
		}
		if silent {
			continue
		}
		mode := *h.mode.Load()
		cmd := current()
		if tag, _, ok := strings.Cut(line, " "); ok && tag != "*" && tag != "+" {
			qmu.Lock()
			for i, q := range queue {
				if q[0] == tag {
					queue = queue[i+1:]
					break
				}
			}
			qmu.Unlock()
		}
		out := line
		first := greeting
		greeting = false
		switch {
		case mode == "garbled greeting" && first:
			out = "* OK [CAPABILITY IMAP4rev1 \"x\"] ready\r\n"
		case mode == "parenthesis in CAPABILITY" && first:
			out = "* OK [CAPABILITY IMAP4rev1 (] ready\r\n"
		case mode == "garbled ESEARCH" && strings.HasPrefix(line, "* SEARCH"):
			out = "* ESEARCH (TAG \"" + *searchTag.Load() + "\") UID ALL 1,,x\r\n"
		case mode == "unbalanced FETCH while idling" && strings.HasPrefix(line, "+ "):
			out = line + "* 1 FETCH (FLAGS (\\Seen)\r\n"
		case mode == "empty search" && strings.HasPrefix(line, "* SEARCH"):
			out = "* SEARCH\r\n"
		case mode == "empty answers" && strings.HasPrefix(line, "* SEARCH"):
			out = "* SEARCH\r\n"
		case mode == "empty answers" && strings.HasPrefix(line, "* ") && strings.Contains(line, " FETCH "):
			// Drop the message and the rest of its response.
			for lit != nil {
				rest, err := br.ReadString('\n')
				if err != nil {
					return
				}
				lit = nil
				if m := literalRE.FindStringSubmatch(rest); m != nil {
					n, _ := strconv.ParseInt(m[1], 10, 64)
					lit = make([]byte, n)
					io.ReadFull(br, lit)
				}
			}
			continue
		case mode == "hides new copies" && strings.HasPrefix(line, "* SEARCH"):
			out = "* SEARCH\r\n"
		case mode == "hides new copies" && strings.Contains(line, "[APPENDUID "):
			out = appendUIDRE.ReplaceAllString(line, "")
		case mode == "UID max in SEARCH" && strings.HasPrefix(line, "* SEARCH"):
			out = "* SEARCH 4294967295\r\n"
		case mode == "huge range in ESEARCH" && strings.HasPrefix(line, "* SEARCH"):
			// go-imap takes an ESEARCH for the answer to the search it
			// names, asked for or not.
			out = "* ESEARCH (TAG \"" + *searchTag.Load() + "\") UID ALL 1:4000000000\r\n"
		case mode == "no FLAGS in FETCH" && strings.HasPrefix(line, "* ") && strings.Contains(line, " FETCH ("):
			out = strings.Replace(flagsRE.ReplaceAllString(line, ""), "FETCH ( ", "FETCH (", 1)
		case mode == "Trash recreated" && strings.HasPrefix(cmd, "SELECT ") && strings.Contains(cmd, "TRASH"):
			// Read-write selects of Trash see another UIDVALIDITY than
			// its EXAMINEs.
			out = validityRE.ReplaceAllStringFunc(line, func(v string) string {
				n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(v, "[UIDVALIDITY "), "]"), 10, 32)
				return "[UIDVALIDITY " + strconv.FormatUint(n+1, 10) + "]"
			})
		case strings.HasPrefix(mode, "APPENDUID ") && strings.Contains(line, "[APPENDUID "):
			out = lieUIDRE.ReplaceAllStringFunc(line, func(v string) string {
				m := lieUIDRE.FindStringSubmatch(v)
				validity, uid := m[1], m[2]
				switch mode {
				case "APPENDUID 0":
					uid = "0"
				case "APPENDUID 4294967295":
					uid = "4294967295"
				case "APPENDUID with UIDVALIDITY 0":
					validity = "0"
				case "APPENDUID of another UIDVALIDITY":
					n, _ := strconv.ParseUint(validity, 10, 32)
					validity = strconv.FormatUint(n+1, 10)
				}
				return "[APPENDUID " + validity + " " + uid + "]"
			})
		case mode == "huge COPYUID":
			out = copyUIDRE.ReplaceAllString(line, "[COPYUID $1 $2 1:4294967295]")
		case mode == "data after BYE" && strings.HasPrefix(line, "* SEARCH"):
			out = "* BYE going away\r\n* SEARCH\r\n"
		case mode == "UIDVALIDITY 0":
			out = validityRE.ReplaceAllString(line, "[UIDVALIDITY 0]")
		case mode == "drop after login" && (strings.HasPrefix(cmd, "LOGIN ") || strings.HasPrefix(cmd, "AUTHENTICATE ")) && !strings.HasPrefix(line, "* ") && !strings.HasPrefix(line, "+ "):
			io.WriteString(c, line)
			return
		case mode == "silent after SELECT" && strings.Contains(line, "Select completed"):
			io.WriteString(c, line)
			silent = true
			continue
		case mode == "2 GB literal in LIST" && strings.HasPrefix(line, "* LIST"):
			io.WriteString(c, "* LIST () \"/\" {2000000000}\r\n")
			flood(c, 'x', 2000000000)
			return
		case mode == "endless line" && strings.HasPrefix(line, "* LIST"):
			io.WriteString(c, "* LIST () \"/\" ")
			flood(c, 'x', 4<<30)
			return
		case mode == "endless LIST" && strings.HasPrefix(line, "* LIST"):
			// Endless as far as the engine's memory goes: 64 MiB, then
			// silence.
			floodLines(c, func(i int) string { return "* LIST () \"/\" f" + strconv.Itoa(i) + "\r\n" }, 64<<20)
			silent = true
			continue
		case mode == "endless SEARCH" && strings.HasPrefix(line, "* SEARCH"):
			floodLines(c, func(i int) string { return "* SEARCH " + strconv.Itoa(2*i+1) + "\r\n" }, 64<<20)
			silent = true
			continue
		case mode == "2 GB literal in FETCH" && strings.HasPrefix(line, "* ") && strings.Contains(line, " FETCH "):
			io.WriteString(c, "* 1 FETCH (UID 1 BODY[HEADER.FIELDS (X-UM-MESSAGE-ID)] {2000000000}\r\n")
			flood(c, 'x', 2000000000)
			return
		case mode == "2 GB unsolicited body while idling" && strings.HasPrefix(line, "+ "):
			io.WriteString(c, line)
			io.WriteString(c, "* 1 FETCH (BODY[] {2000000000}\r\n")
			flood(c, 'x', 2000000000)
			return
		case mode == "unsolicited flood for other mail" && strings.HasPrefix(line, "+ "):
			io.WriteString(c, line)
			for range 2000 {
				io.WriteString(c, "* 1 FETCH (UID 99999 FLAGS (\\Seen))\r\n")
			}
			continue
		}
		io.WriteString(c, out)
		c.Write(lit)
	}
}

// memWatch samples the heap until stopped and returns the peak above
// the heap at start.
func memWatch() (stop func() uint64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > base && ms.HeapInuse-base > peak.Load() {
				peak.Store(ms.HeapInuse - base)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

// TestHostileServer puts each lie of a hostile server between the engine
// and a Dovecot that holds the mailbox's copies: the phone keeps every
// voicemail, no copy is uploaded twice, Status names the fault, the engine
// backs off instead of reconnecting in a loop, memory stays bounded, and
// once the server is honest again everything is in sync (a voicemail
// deposited meanwhile goes up once).
func TestHostileServer(t *testing.T) {
	modes := []struct {
		mode string
		// fault is what Status must say: nil for no error, errAny for any.
		fault error
		// deposit makes a voicemail while the lie goes on, which has to
		// wait for an honest server.
		deposit bool
		// sync asks for a sync while the lie goes on, which must fail
		// with ErrServerFault (not hang).
		sync bool
	}{
		{"empty search", nil, false, false}, // trusted copies a FETCH shows
		{"empty answers", upstream.ErrServerFault, false, false},
		{"data after BYE", upstream.ErrServerFault, false, false},
		{"UIDVALIDITY 0", upstream.ErrServerFault, true, false},
		{"hides new copies", upstream.ErrServerFault, true, false},
		{"silent after SELECT", errAny, true, false},
		{"2 GB literal in LIST", upstream.ErrServerFault, false, false},
		{"endless line", upstream.ErrServerFault, false, false},
		{"2 GB literal in FETCH", upstream.ErrServerFault, false, false},
		{"2 GB unsolicited body while idling", upstream.ErrServerFault, false, false},
		{"unsolicited flood for other mail", nil, false, false},
		{"UID max in SEARCH", upstream.ErrServerFault, false, true},
		{"huge range in ESEARCH", upstream.ErrServerFault, false, true},
		{"endless LIST", upstream.ErrServerFault, false, true},
		{"endless SEARCH", upstream.ErrServerFault, false, true},
		// A copy seen without its flags is not one without flags: the
		// heard voicemail stays heard.
		{"no FLAGS in FETCH", upstream.ErrServerFault, false, true},
		// An answer go-imap cannot parse ends the connection like a lost
		// one, but the server sent it: a fault, backed off, not probed for.
		{"garbled greeting", upstream.ErrServerFault, false, true},
		{"garbled ESEARCH", upstream.ErrServerFault, false, true},
		{"unbalanced FETCH while idling", upstream.ErrServerFault, false, false},
		// go-imap's client would loop for ever on it, a core busy and the
		// connection never closed.
		{"parenthesis in CAPABILITY", upstream.ErrServerFault, false, true},
	}
	var users []string
	for i := range modes {
		users = append(users, strconv.Itoa(2000+i))
	}
	d := startDovecotPlain(t, users...)
	for i, tc := range modes {
		t.Run(tc.mode, func(t *testing.T) {
			h := startHostile(t, d)
			opts := testOptions
			opts.MinBackoff, opts.MaxBackoff = 100*time.Millisecond, time.Second
			opts.CommandTimeout = 500 * time.Millisecond
			// A line limit well under what a loaded machine reads within
			// the deadline, so the endless line is refused by the guard
			// rather than abandoned as silence.
			opts.MaxLine = 64 << 10
			if strings.HasPrefix(tc.mode, "endless") || strings.HasPrefix(tc.mode, "2 GB") {
				// A flood is refused by size, not time: under the race
				// detector on a busy machine 64 KiB can take longer than
				// 500 ms to arrive, and the 2 MiB of an endless LIST
				// close to 2 s, and the deadline would end it first.
				opts.CommandTimeout = 5 * time.Second
			}
			e := newEnvOpts(t, d, opts, nil)
			ctx := context.Background()
			user := users[i]
			mb, err := e.svc.EnsureMailbox(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			mc := newMailClient(t, d, user)
			cfg := e.config(user, "")
			cfg.Addr, cfg.Security, cfg.TLSConfig = h.ln.Addr().String(), upstream.ImplicitTLS, h.cert.ClientConfig("localhost")
			if err := e.eng.Add(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			var msgs []um.Message
			for i := range 5 {
				msgs = append(msgs, deposit(t, mb, strconv.Itoa(i)))
			}
			if err := mb.MarkHeard(ctx, msgs[0].ID); err != nil {
				t.Fatal(err)
			}
			e.waitSynced(user)
			mwiBefore, _ := mb.MWI(ctx)
			fetches := h.commands("UID FETCH")
			appends := h.commands("APPEND")

			stop := memWatch()
			h.setMode(tc.mode)
			conns := h.conns.Load()
			// Make the engine talk: a reconnect and a full pass.
			h.kick()
			var late um.Message
			if tc.deposit {
				late = deposit(t, mb, "late")
			}
			time.Sleep(3 * time.Second)
			if tc.sync {
				wantFault(t, e, user)
			}
			peak := stop()
			st := e.eng.Status(user)
			reconnects := h.conns.Load() - conns

			if tc.mode == "hides new copies" {
				// One per backoff period, the period doubling from 100 ms.
				if n := h.commands("APPEND") - appends; n < 1 || n > 5 {
					t.Errorf("APPENDs of one voicemail in 3 s = %d, want 1 to 5", n)
				}
			}
			if tc.mode == "unsolicited flood for other mail" {
				if n := h.commands("UID FETCH") - fetches; n > 10 {
					t.Errorf("UID FETCH commands during a flood of 2000 unsolicited FETCHes for other mail = %d, want at most 10", n)
				}
			}
			switch {
			case tc.fault == nil && st.LastError != nil:
				t.Errorf("Status().LastError = %v, want nil (status %+v)", st.LastError, st)
			case tc.fault != nil && st.LastError == nil:
				t.Errorf("Status().LastError = nil, want the fault (status %+v)", st)
			case tc.fault != nil && tc.fault != errAny && !errors.Is(st.LastError, tc.fault):
				t.Errorf("Status().LastError = %v, want %v", st.LastError, tc.fault)
			}
			// Backoff from 100 ms doubling to 1 s: at most 8 attempts in 3 s.
			if reconnects > 8 {
				t.Errorf("connections in 3 s = %d, want at most 8 (backoff)", reconnects)
			}
			if peak > 64<<20 {
				t.Errorf("heap peak above baseline = %d MiB, want under 64 MiB", peak>>20)
			}
			t.Logf("%s: heap peak +%d KiB, connections %d, APPENDs %d, last error: %v", tc.mode, peak>>10, reconnects, h.commands("APPEND")-appends, st.LastError)

			// Nothing was changed on the lie.
			for _, m := range msgs {
				got, err := mb.Message(ctx, m.ID)
				if err != nil || got.Folder != um.Inbox {
					t.Fatalf("voicemail %s after %q: folder %q, %v; want INBOX", m.CallerNumber, tc.mode, got.Folder, err)
				}
				if heard := got.Flags&um.FlagHeard != 0; heard != (m.ID == msgs[0].ID) {
					t.Errorf("voicemail %s after %q: heard %v, want %v", m.CallerNumber, tc.mode, heard, !heard)
				}
			}
			want := mwiBefore.New
			if tc.deposit {
				want++
			}
			if mwi, _ := mb.MWI(ctx); mwi.New != want {
				t.Errorf("MWI New = %d, want %d", mwi.New, want)
			}

			h.setMode("")
			h.kick()
			e.waitSynced(user)
			e.waitSynced(user)
			if tc.deposit {
				msgs = append(msgs, late)
			}
			for _, m := range msgs {
				if n := len(mc.find("INBOX", m.ID)); n != 1 {
					t.Errorf("copies of %s upstream = %d, want 1", m.CallerNumber, n)
				}
			}
		})
	}
}

// TestHugeCOPYUID: the server answers the move of a copy back from Trash
// (the phone's undelete) with a COPYUID naming 1:4294967295 in the folder.
// One copy has one UID: the sync fails at once with a server fault instead
// of counting to 2^32, the voicemail stays in INBOX on the phone, and once
// the server is honest it has its one copy in the folder and none in Trash.
func TestHugeCOPYUID(t *testing.T) {
	e, h, mb, mc, m := deletedThroughHostile(t)
	ctx := context.Background()
	h.setMode("huge COPYUID")
	if _, err := mb.Undelete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	wantFault(t, e, "1001")
	if got, err := mb.Message(ctx, m.ID); err != nil || got.Folder != um.Inbox {
		t.Errorf("voicemail after the lie: folder %q, %v; want INBOX", got.Folder, err)
	}

	h.setMode("")
	e.waitSynced("1001")
	e.waitSynced("1001")
	if n, k := len(mc.live("INBOX", m.ID)), len(mc.live("Trash", m.ID)); n != 1 || k != 0 {
		t.Errorf("live copies in INBOX, Trash = %d, %d; want 1, 0", n, k)
	}
	if got, err := mb.Message(ctx, m.ID); err != nil || got.Folder != um.Inbox {
		t.Errorf("voicemail: folder %q, %v; want INBOX", got.Folder, err)
	}
}

// TestTrashRecreatedBeforeDedup: between the engine's look into Trash
// (EXAMINE and searches) and its removal of a second copy there (SELECT,
// STORE \Deleted, UID EXPUNGE), Trash answers another UIDVALIDITY: it
// was recreated, and the UIDs the look found name other mail now. The
// sync fails with a server fault and nothing is stored or expunged;
// once the server is honest the second copy goes.
func TestTrashRecreatedBeforeDedup(t *testing.T) {
	e, h, mb, mc, m := deletedThroughHostile(t)
	ctx := context.Background()
	// The user's client makes a second copy in Trash.
	uids := mc.live("Trash", m.ID)
	if _, err := mc.c.Copy(imap.UIDSetNum(uids...), "Trash").Wait(); err != nil {
		t.Fatal(err)
	}
	if n := len(mc.live("Trash", m.ID)); n != 2 {
		t.Fatalf("live copies in Trash = %d, want 2", n)
	}

	h.setMode("Trash recreated")
	stores, expunges := h.commands("UID STORE"), h.commands("UID EXPUNGE")
	wantFault(t, e, "1001")
	if n, k := h.commands("UID STORE")-stores, h.commands("UID EXPUNGE")-expunges; n != 0 || k != 0 {
		t.Errorf("UID STORE, UID EXPUNGE commands after Trash's UIDVALIDITY changed = %d, %d; want 0, 0", n, k)
	}
	if n := len(mc.live("Trash", m.ID)); n != 2 {
		t.Errorf("live copies in Trash after the lie = %d, want 2 (untouched)", n)
	}

	h.setMode("")
	e.waitSynced("1001")
	eventually(t, "one live copy in Trash", func() bool { return len(mc.live("Trash", m.ID)) == 1 })
	if got, err := mb.Message(ctx, m.ID); err != nil || got.Folder != um.Trash {
		t.Errorf("voicemail: folder %q, %v; want um's Trash", got.Folder, err)
	}
}

// deletedThroughHostile is throughHostile with a voicemail deposited,
// synced and deleted on the phone, its copy moved to Trash by the
// engine's own pass (not a full one, which would look at Trash again).
func deletedThroughHostile(t *testing.T) (*env, *hostile, *um.Mailbox, *mailClient, um.Message) {
	t.Helper()
	e, h, mb := throughHostile(t)
	m := deposit(t, mb, "100")
	e.waitSynced("1001")
	mc := newMailClient(t, e.d, "1001")
	before := e.eng.Status("1001").LastSync
	if err := mb.Delete(context.Background(), m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the delete carried over", func() bool {
		st := e.eng.Status("1001")
		return st.LastSync.After(before) && st.Lag == 0 && len(mc.live("Trash", m.ID)) == 1
	})
	return e, h, mb, mc, m
}

// wantFault asks for a sync of mailbox, which must fail with a server
// fault, not hang.
func wantFault(t *testing.T, e *env, mailbox string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.eng.Sync(ctx, mailbox); !errors.Is(err, upstream.ErrServerFault) {
		t.Errorf("Sync() = %v, want %v", err, upstream.ErrServerFault)
	}
}

// errAny stands for any error in Status.
var errAny = errors.New("any error")

// kick cuts the engine's connections, so it reconnects and starts with a
// full pass.
func (h *hostile) kick() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.open {
		c.Close()
	}
}

// startDovecotPlain is startDovecot with plaintext logins allowed, for a
// proxy that ends TLS itself.
func startDovecotPlain(tb testing.TB, users ...string) *dovecot.Server {
	tb.Helper()
	pw := make(map[string]string, len(users))
	for _, u := range users {
		pw[u] = "pass" + u
	}
	d, err := dovecot.Start(dovecot.Options{Dir: tb.TempDir(), Users: pw, AllowPlaintext: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(d.Stop)
	return d
}

// TestLyingAPPENDUID: the server answers the upload of a voicemail with an
// APPENDUID that cannot name its copy: UID 0, UID 4294967295 (above which
// the search for arrivals would ask for "0:*"), or another UIDVALIDITY
// than the folder's. The session fails with a server fault and the UID is
// not kept; the next session finds the copy by its header rather than
// uploading it again, and the voicemail heard on the phone gets \Seen on
// that one copy.
func TestLyingAPPENDUID(t *testing.T) {
	lies := []string{"APPENDUID 0", "APPENDUID 4294967295", "APPENDUID with UIDVALIDITY 0", "APPENDUID of another UIDVALIDITY"}
	var users []string
	for i := range lies {
		users = append(users, strconv.Itoa(3000+i))
	}
	d := startDovecotPlain(t, users...)
	for i, lie := range lies {
		t.Run(lie, func(t *testing.T) {
			ctx := context.Background()
			user := users[i]
			h := startHostile(t, d)
			faults := &errorLog{}
			opts := testOptions
			opts.Logger = slog.New(faults)
			e := newEnvOpts(t, d, opts, nil)
			mb, err := e.svc.EnsureMailbox(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			cfg := e.config(user, "")
			cfg.Addr, cfg.Security, cfg.TLSConfig = h.ln.Addr().String(), upstream.ImplicitTLS, h.cert.ClientConfig("localhost")
			if err := e.eng.Add(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			e.waitSynced(user)
			mc := newMailClient(t, d, user)

			h.setMode(lie)
			appends := h.commands("APPEND")
			m := deposit(t, mb, "100")
			eventually(t, "a server fault about the APPEND", func() bool {
				return faults.has(func(err error) bool {
					return errors.Is(err, upstream.ErrServerFault) && strings.Contains(err.Error(), "APPEND answered")
				})
			})
			e.waitSynced(user) // the lie goes on, but no APPEND is due
			if n := h.commands("APPEND") - appends; n != 1 {
				t.Errorf("APPENDs of one voicemail = %d, want 1", n)
			}
			uids := mc.find("INBOX", m.ID)
			if len(uids) != 1 {
				t.Fatalf("copies upstream = %d, want 1", len(uids))
			}
			if err := mb.MarkHeard(ctx, m.ID); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the copy \\Seen", func() bool { return hasFlag(mc.flags("INBOX", uids[0]), imap.FlagSeen) })
			if got, err := mb.Message(ctx, m.ID); err != nil || got.Folder != um.Inbox {
				t.Errorf("voicemail: folder %q, %v; want INBOX", got.Folder, err)
			}
		})
	}
}

// errorLog is a slog handler that keeps the errors logged.
type errorLog struct {
	mu   sync.Mutex
	errs []error
}

func (l *errorLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *errorLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *errorLog) WithGroup(string) slog.Handler            { return l }

func (l *errorLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok {
			l.mu.Lock()
			l.errs = append(l.errs, err)
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

// has tells whether an error logged so far satisfies match.
func (l *errorLog) has(match func(error) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.errs, match)
}

// TestLoginThenDrop: a server that lets the engine log in, then drops every
// connection before anything else (overloaded, or hostile). The address
// answers, so it is not down for want of a network: each worker backs off
// as after any failure, doubling its wait, instead of one probing at
// ProbeInterval and every login it makes waking all the others to log in
// too, which hammered a sick server with every mailbox's logins at each
// probe. Nothing reaches the server but logins, and the voicemail waits in
// um.
func TestLoginThenDrop(t *testing.T) {
	users := []string{"1001", "1002", "1003", "1004", "1005", "1006", "1007", "1008"}
	d := startDovecotPlain(t, users...)
	h := startHostile(t, d)
	h.setMode("drop after login")
	opts := testOptions
	opts.MinBackoff, opts.MaxBackoff, opts.ProbeInterval = 100*time.Millisecond, time.Minute, 100*time.Millisecond
	e := newEnvOpts(t, d, opts, nil)
	ctx := context.Background()
	for _, u := range users {
		mb, err := e.svc.EnsureMailbox(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		deposit(t, mb, "held")
		cfg := e.config(u, "")
		cfg.Addr, cfg.Security, cfg.TLSConfig = h.ln.Addr().String(), upstream.ImplicitTLS, h.cert.ClientConfig("localhost")
		if err := e.eng.Add(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	// Over 3 s a worker whose wait doubles from 100 ms (at least half of
	// it, with jitter: 50, 100, 200, 400, 800, 1600 ms) makes at most 6
	// attempts; a probe every 100 ms, each waking the 7 others, makes
	// hundreds.
	const window = 3 * time.Second
	time.Sleep(window)
	logins := h.commands("AUTHENTICATE") + h.commands("LOGIN")
	t.Logf("logins in %v: %d", window, logins)
	if max := 7 * len(users); logins > max {
		t.Errorf("logins in %v = %d, want at most %d (%d mailboxes backing off from %v)", window, logins, max, len(users), opts.MinBackoff)
	}
	if logins < len(users) {
		t.Errorf("logins in %v = %d, want at least one per mailbox (%d)", window, logins, len(users))
	}
	if n := h.commands("APPEND"); n != 0 {
		t.Errorf("APPENDs that reached the server = %d, want none: it drops every session after its login", n)
	}
	for _, u := range users {
		if st := e.eng.Status(u); st.Connected || st.LastError == nil {
			t.Errorf("Status(%s) = %+v, want not connected, with the lost connection as its error", u, st)
		}
	}
}
