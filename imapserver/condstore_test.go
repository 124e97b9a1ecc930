package imapserver

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/google/uuid"
)

var modseqRe = regexp.MustCompile(`HIGHESTMODSEQ (\d+)`)

func highestModSeq(t *testing.T, lines []string) uint64 {
	t.Helper()
	m := modseqRe.FindStringSubmatch(strings.Join(lines, "|"))
	if m == nil {
		t.Fatalf("no HIGHESTMODSEQ in %q", lines)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// TestCondstore: HIGHESTMODSEQ in SELECT and STATUS, MODSEQ in FETCH,
// FETCH CHANGEDSINCE and STORE UNCHANGEDSINCE (RFC 7162).
func TestCondstore(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 3; i++ {
		e.deposit("1001", "+1", 10)
	}
	r := e.loggedIn("alice")
	if caps := strings.Join(r.until0("a0 CAPABILITY", "a0"), " "); !strings.Contains(caps, "CONDSTORE") || !strings.Contains(caps, "QRESYNC") {
		t.Fatalf("CAPABILITY = %q, want CONDSTORE and QRESYNC (memstore keeps ModSeqs)", caps)
	}
	start := highestModSeq(t, r.until0("b SELECT INBOX (CONDSTORE)", "b"))
	if got := strings.Join(r.until0(`c STORE 2 +FLAGS (\Flagged)`, "c"), "|"); !strings.Contains(got, "MODSEQ (") {
		t.Fatalf("STORE with CONDSTORE = %q, want MODSEQ in the FETCH", got)
	}
	lines := r.until0("d FETCH 1:* (UID FLAGS) (CHANGEDSINCE "+strconv.FormatUint(start, 10)+")", "d")
	got := strings.Join(lines, "|")
	if strings.Count(got, " FETCH (") != 1 || !strings.Contains(got, "* 2 FETCH") || !strings.Contains(got, "MODSEQ") {
		t.Fatalf("FETCH CHANGEDSINCE = %q, want message 2 only, with MODSEQ", got)
	}
	// Another client changes message 3: a STORE conditional on the old
	// ModSeq leaves it alone and names it in MODIFIED.
	msgs := e.list("1001", um.Inbox)
	if _, err := e.mailbox("1001").SetFlags(context.Background(), []uuid.UUID{msgs[2].ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDraft}); err != nil {
		t.Fatal(err)
	}
	lines = r.until0(`f STORE 1,3 (UNCHANGEDSINCE `+strconv.FormatUint(start, 10)+`) +FLAGS (\Answered)`, "f")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "f OK [MODIFIED 3]") {
		t.Fatalf("STORE UNCHANGEDSINCE = %q, want OK [MODIFIED 3]", lines)
	}
	for i, m := range e.list("1001", um.Inbox) {
		if want := i == 0; m.Flags.Has(um.FlagAnswered) != want {
			t.Fatalf("message %d answered = %v, want %v", i+1, !want, want)
		}
	}
	st := strings.Join(r.until0("g STATUS Trash (HIGHESTMODSEQ MESSAGES)", "g"), "|")
	if !strings.Contains(st, "HIGHESTMODSEQ ") {
		t.Fatalf("STATUS = %q, want HIGHESTMODSEQ", st)
	}
	if got := strings.Join(r.until0(`h SEARCH MODSEQ `+strconv.FormatUint(start+1, 10), "h"), "|"); !strings.Contains(got, "* SEARCH") || !strings.Contains(got, "(MODSEQ ") {
		t.Fatalf("SEARCH MODSEQ = %q, want results with (MODSEQ n)", got)
	}
}

// TestQresync: after ENABLE QRESYNC, EXPUNGE is told as VANISHED, and a
// SELECT with the client's last state gets the UIDs removed since as
// VANISHED (EARLIER) and the changed messages' flags.
func TestQresync(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 4; i++ {
		e.deposit("1001", "+1", 10)
	}
	r := e.loggedIn("alice")
	if got := strings.Join(r.until0("b ENABLE QRESYNC", "b"), "|"); !strings.Contains(got, "* ENABLED") || !strings.Contains(got, "QRESYNC") {
		t.Fatalf("ENABLE QRESYNC = %q", got)
	}
	lines := r.until0("c SELECT INBOX", "c")
	ms := highestModSeq(t, lines)
	uv := regexp.MustCompile(`UIDVALIDITY (\d+)`).FindStringSubmatch(strings.Join(lines, "|"))[1]
	r.cmd("d", "UNSELECT")
	// Meanwhile: message 2 expunged elsewhere, message 4 flagged.
	msgs := e.list("1001", um.Inbox)
	mb := e.mailbox("1001")
	if _, err := mb.SetFlags(context.Background(), []uuid.UUID{msgs[1].ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted}); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Expunge(context.Background(), um.Inbox, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.SetFlags(context.Background(), []uuid.UUID{msgs[3].ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagFlagged}); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(r.until0("e SELECT INBOX (QRESYNC ("+uv+" "+strconv.FormatUint(ms, 10)+" 1:4))", "e"), "|")
	if !strings.Contains(got, "* VANISHED (EARLIER) "+strconv.Itoa(int(msgs[1].UID))) {
		t.Fatalf("SELECT QRESYNC = %q, want VANISHED (EARLIER) %d", got, msgs[1].UID)
	}
	if !strings.Contains(got, "* 3 FETCH (UID "+strconv.Itoa(int(msgs[3].UID))+" FLAGS (\\Flagged) MODSEQ") {
		t.Fatalf("SELECT QRESYNC = %q, want the flag change of UID %d", got, msgs[3].UID)
	}
	r.cmd("f", `STORE 1 +FLAGS (\Deleted)`)
	if got := strings.Join(r.until0("g EXPUNGE", "g"), "|"); !strings.Contains(got, "* VANISHED "+strconv.Itoa(int(msgs[0].UID))) || strings.Contains(got, "EXPUNGE\r") {
		t.Fatalf("EXPUNGE under QRESYNC = %q, want VANISHED %d", got, msgs[0].UID)
	}
}

// lateChangeStore is a store on which another node's flag change lands
// right before the next flag write a session makes: after the session's
// view was synced, before its STORE reaches the store. Its events never
// reach this node's sessions, as a change of another node has not yet.
type lateChangeStore struct {
	um.Store
	inner  *memstore.Store
	armed  atomic.Bool
	target uuid.UUID
}

func (s *lateChangeStore) land(ctx context.Context, mailbox string) error {
	if !s.armed.CompareAndSwap(true, false) {
		return nil
	}
	_, err := s.inner.SetFlags(ctx, mailbox, []uuid.UUID{s.target}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDraft})
	return err
}

func (s *lateChangeStore) SetFlags(ctx context.Context, mailbox string, ids []uuid.UUID, op um.FlagOp) ([]um.Message, error) {
	if err := s.land(ctx, mailbox); err != nil {
		return nil, err
	}
	return s.Store.SetFlags(ctx, mailbox, ids, op)
}

func (s *lateChangeStore) SetFlagsIfUnchanged(ctx context.Context, mailbox string, ids []uuid.UUID, op um.FlagOp, since uint64) ([]um.Message, []uuid.UUID, error) {
	if err := s.land(ctx, mailbox); err != nil {
		return nil, nil, err
	}
	return s.inner.SetFlagsIfUnchanged(ctx, mailbox, ids, op, since)
}

func (s *lateChangeStore) Vanished(ctx context.Context, mailbox, folder string, since uint64) ([]um.UID, uint64, error) {
	return s.inner.Vanished(ctx, mailbox, folder, since)
}

// TestCondstoreLateChange: a change committed after the session's last
// sync, which the session has not heard of, still makes STORE
// UNCHANGEDSINCE leave that message alone and name it in MODIFIED; the
// others are stored.
func TestCondstoreLateChange(t *testing.T) {
	late := &lateChangeStore{}
	e := newEnvOn(t, func(s um.Store) um.Store {
		late.Store = s
		late.inner = s.(*countingStore).Store.(*memstore.Store)
		return late
	}, um.Options{}, nil)
	for i := 0; i < 3; i++ {
		e.deposit("1001", "+1", 10)
	}
	r := e.loggedIn("alice")
	start := highestModSeq(t, r.until0("b SELECT INBOX (CONDSTORE)", "b"))
	late.target = e.list("1001", um.Inbox)[2].ID
	late.armed.Store(true)
	lines := r.until0(`c STORE 1:3 (UNCHANGEDSINCE `+strconv.FormatUint(start, 10)+`) +FLAGS (\Answered)`, "c")
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "c OK [MODIFIED 3]") {
		t.Fatalf("STORE UNCHANGEDSINCE = %q, want OK [MODIFIED 3]", lines)
	}
	if late.armed.Load() {
		t.Fatal("the other node's change never landed")
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "* 3 FETCH") {
			t.Errorf("STORE told message 3's flags (%q), but left it alone", l)
		}
	}
	for i, m := range e.list("1001", um.Inbox) {
		if want := i < 2; m.Flags.Has(um.FlagAnswered) != want {
			t.Errorf("message %d answered = %v, want %v", i+1, !want, want)
		}
	}
	if m := e.list("1001", um.Inbox)[2]; !m.Flags.Has(um.FlagDraft) {
		t.Errorf("message 3 flags %v, want the other node's \\Draft kept", m.Flags)
	}
}
