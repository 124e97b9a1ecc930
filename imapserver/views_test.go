package imapserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// TestSequenceNumbersWhileOthersExpunge: one client expunges while the
// other holds sequence numbers; the other's numbers stay valid until it
// is told, and are then right.
func TestSequenceNumbersWhileOthersExpunge(t *testing.T) {
	e := newEnv(t, nil)
	for _, n := range []string{"+1", "+2", "+3", "+4"} {
		e.deposit("1001", n, 10)
	}
	r1 := dialRaw(t, e.tlsAddr, e.clientTLS)
	r2 := dialRaw(t, e.tlsAddr, e.clientTLS)
	for _, r := range []*raw{r1, r2} {
		r.cmd("a", "LOGIN alice alice-pw")
		r.cmd("b", "SELECT INBOX")
	}
	// Client 1 deletes messages 2 and 3.
	r1.cmd("c", `STORE 2:3 +FLAGS.SILENT (\Deleted)`)
	lines := r1.until0("d EXPUNGE", "d")
	if got := strings.Join(lines, "|"); !strings.Contains(got, "* 3 EXPUNGE|* 2 EXPUNGE") {
		t.Fatalf("client 1 EXPUNGE = %q, want 3 then 2", got)
	}
	// Client 2 still addresses message 4 as seq 4: FETCH may not expunge.
	lines = r2.until0("e FETCH 4 (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])", "e")
	if got := strings.Join(lines, "|"); !strings.Contains(got, "* 4 FETCH") || !strings.Contains(got, "+4") || strings.Contains(got, "EXPUNGE") {
		t.Fatalf("client 2 FETCH 4 before NOOP = %q, want message +4 at seq 4 and no EXPUNGE", got)
	}
	// Seq 2 is gone: left out, no error.
	if got := r2.cmd("f", "FETCH 2 (FLAGS)"); !strings.HasPrefix(got, "f OK") {
		t.Fatalf("FETCH of expunged seq = %q, want OK", got)
	}
	lines = r2.until0("g NOOP", "g")
	if got := strings.Join(lines, "|"); !strings.Contains(got, "* 3 EXPUNGE|* 2 EXPUNGE") {
		t.Fatalf("client 2 NOOP = %q, want EXPUNGE 3 then 2", got)
	}
	lines = r2.until0("h FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])", "h")
	if got := strings.Join(lines, "|"); !strings.Contains(got, "* 2 FETCH") || !strings.Contains(got, "+4") {
		t.Fatalf("client 2 FETCH 2 after NOOP = %q, want +4", got)
	}
}

// TestCopyMoveIntoSelectedFolder: COPY and MOVE into the selected folder
// show as EXISTS to the session itself, for rev1 and rev2 clients.
func TestCopyMoveIntoSelectedFolder(t *testing.T) {
	for _, rev2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("rev2=%v", rev2), func(t *testing.T) {
			e := newEnv(t, nil)
			e.deposit("1001", "+1", 10)
			r := dialRaw(t, e.tlsAddr, e.clientTLS)
			r.cmd("a", "LOGIN alice alice-pw")
			if rev2 {
				r.cmd("b", "ENABLE IMAP4rev2")
			}
			lines := r.until0("c SELECT INBOX", "c")
			if got := strings.Join(lines, "|"); rev2 == strings.Contains(got, "RECENT") {
				t.Fatalf("SELECT = %q: RECENT wanted only for rev1", got)
			}
			lines = r.until0("d COPY 1 INBOX", "d")
			if got := strings.Join(lines, "|"); !strings.Contains(got, "* 2 EXISTS") || !strings.Contains(got, "COPYUID") {
				t.Fatalf("COPY into selected = %q, want * 2 EXISTS and COPYUID", got)
			}
			lines = r.until0("e MOVE 1 INBOX", "e")
			got := strings.Join(lines, "|")
			if !strings.Contains(got, "* 1 EXPUNGE") || !strings.Contains(got, "* 2 EXISTS") {
				t.Fatalf("MOVE into selected = %q, want * 1 EXPUNGE and * 2 EXISTS", got)
			}
			lines = r.until0("f FETCH 1:* (UID)", "f")
			if n := strings.Count(strings.Join(lines, "|"), "FETCH (UID"); n != 2 {
				t.Fatalf("FETCH 1:* = %q, want 2 messages", lines)
			}
			if n := len(e.list("1001", um.Inbox)); n != 2 {
				t.Fatalf("INBOX holds %d, want 2", n)
			}
		})
	}
}

// TestFlagsResponseListsKeywords: a new keyword set by another session
// comes with a FLAGS response that lists it.
func TestFlagsResponseListsKeywords(t *testing.T) {
	e := newEnv(t, nil)
	m := e.deposit("1001", "+1", 10)
	if _, err := e.mailbox("1001").SetFlags(context.Background(), []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsAdd, Keywords: []string{"$Old"}}); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	lines := r.until0("b SELECT INBOX", "b")
	if got := strings.Join(lines, "|"); !strings.Contains(got, "* FLAGS (") || !strings.Contains(got, "$Old") {
		t.Fatalf("SELECT = %q, want FLAGS with $Old", got)
	}
	if _, err := e.mailbox("1001").SetFlags(context.Background(), []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsAdd, Keywords: []string{"$Label2"}}); err != nil {
		t.Fatal(err)
	}
	lines = r.until0("c NOOP", "c")
	got := strings.Join(lines, "|")
	if !strings.Contains(got, "* FLAGS (") || !strings.Contains(got, "$Label2") || !strings.Contains(got, "* 1 FETCH") {
		t.Fatalf("NOOP = %q, want FLAGS with $Label2 and FETCH 1", got)
	}
}

func TestErrorMapping(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name string
		err  error
		r    role
		typ  imap.StatusResponseType
		code imap.ResponseCode
	}{
		{"not found", um.ErrNotFound, roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeNonExistent},
		{"missing destination", um.ErrNotFound, roleDest, imap.StatusResponseTypeNo, imap.ResponseCodeTryCreate},
		{"exists", um.ErrExists, roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeAlreadyExists},
		{"full", um.ErrMailboxFull, roleDest, imap.StatusResponseTypeNo, imap.ResponseCodeOverQuota},
		{"reserved", um.ErrReserved, roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeCannot},
		{"not voice", um.ErrNotVoice, roleDest, imap.StatusResponseTypeNo, imap.ResponseCodeCannot},
		{"invalid", um.ErrInvalid, roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeCannot},
		{"bad audio", um.ErrBadAudio, roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeCannot},
		{"mode conflict", um.ErrModeConflict, roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeCannot},
		{"content size", um.ErrContentSize, roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeCorruption},
		{"overflow", um.ErrOverflow, roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable},
		{"closed", um.ErrClosed, roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable},
		{"canceled", context.Canceled, roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable},
		{"timeout", context.DeadlineExceeded, roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable},
		{"unknown", errors.New("disk on fire"), roleSource, imap.StatusResponseTypeNo, imap.ResponseCodeServerBug},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wrapped := fmt.Errorf("um: something %q: %w", "x", tt.err)
			var ie *imap.Error
			if !errors.As(e.srv.imapError(wrapped, tt.r), &ie) {
				t.Fatalf("imapError(%v) is not an *imap.Error", wrapped)
			}
			if ie.Type != tt.typ || ie.Code != tt.code {
				t.Fatalf("imapError(%v) = %s [%s], want %s [%s]", wrapped, ie.Type, ie.Code, tt.typ, tt.code)
			}
		})
	}
	// Every mapped sentinel avoids SERVERBUG.
	for _, m := range errorMapping {
		if m.code == imap.ResponseCodeServerBug {
			t.Errorf("mapping of %v is SERVERBUG", m.err)
		}
	}
}

func TestMailboxFullIsOverQuota(t *testing.T) {
	e := newEnvWith(t, um.Options{MaxMessages: 1}, nil)
	e.deposit("1001", "+1", 10)
	c := e.dial("alice", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Copy(imap.SeqSetNum(1), "Trash").Wait(); err != nil {
		t.Fatalf("COPY to Trash = %v, want OK (Trash is not counted)", err)
	}
	if err := c.Create("Keep", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Copy(imap.SeqSetNum(1), "Keep").Wait(); codeOf(err) != imap.ResponseCodeOverQuota {
		t.Fatalf("COPY over the limit = %v, want OVERQUOTA", err)
	}
}

// TestSessionErrorsAreIMAPErrors: whatever error a session method ends
// with reaches go-imap as an *imap.Error, so go-imap's own fallback answer
// is never used for it: an unknown error is NO [SERVERBUG] and logged, a
// failed connection is no server bug, a panic is recovered.
func TestSessionErrorsAreIMAPErrors(t *testing.T) {
	var mu sync.Mutex
	var logged []string
	e := newEnv(t, func(o *Options) {
		o.Logf = func(format string, args ...any) {
			mu.Lock()
			logged = append(logged, fmt.Sprintf(format, args...))
			mu.Unlock()
		}
	})
	wasLogged := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range logged {
			if strings.Contains(l, s) {
				return true
			}
		}
		return false
	}
	run := func(nc *netConn, f func() error) (err error) {
		sess := &session{srv: e.srv, nc: nc}
		defer sess.guard(&err)()
		return f()
	}
	tests := []struct {
		name   string
		failed bool // the connection had failed
		f      func() error
		code   imap.ResponseCode
		logged string
	}{
		{"unknown", false, func() error { return errors.New("disk on fire") }, imap.ResponseCodeServerBug, "disk on fire"},
		{"mapped", false, func() error { return fmt.Errorf("um: x: %w", um.ErrNotFound) }, imap.ResponseCodeNonExistent, ""},
		{"imap error", false, func() error { return errCannot("no") }, imap.ResponseCodeCannot, ""},
		{"panic", false, func() error { panic("boom") }, imap.ResponseCodeServerBug, "boom"},
		{"write to a failed connection", true, func() error { return errors.New("write: broken pipe") }, imap.ResponseCodeUnavailable, ""},
		{"closed connection", false, func() error { return fmt.Errorf("write: %w", net.ErrClosed) }, imap.ResponseCodeUnavailable, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nc := &netConn{srv: e.srv}
			if tt.failed {
				nc.failed.Store(true)
			}
			err := run(nc, tt.f)
			var ie *imap.Error
			if !errors.As(err, &ie) || ie.Code != tt.code || ie.Type != imap.StatusResponseTypeNo {
				t.Fatalf("session method error = %#v, want an *imap.Error NO [%s]", err, tt.code)
			}
			if tt.logged != "" && !wasLogged(tt.logged) {
				t.Fatalf("%q was not logged", tt.logged)
			}
		})
	}
	if wasLogged("broken pipe") {
		t.Error("a failed connection was logged as a server error")
	}
}
