package imapserver

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/embeddedum/um"
)

// keywords returns the flag list (prefix+from ... prefix+to).
func keywords(prefix string, from, to int) string {
	var b strings.Builder
	b.WriteByte('(')
	for i := from; i <= to; i++ {
		if i > from {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s%d", prefix, i)
	}
	b.WriteByte(')')
	return b.String()
}

// wantKeywordCounts fails the test unless the messages of folder in 1001,
// in UID order, carry as many keywords as want lists ("[100 0 0]"), as the
// store has them; why says what the test expects of them.
func (e *env) wantKeywordCounts(folder, want, why string) {
	e.t.Helper()
	var n []int
	for _, m := range e.list("1001", folder) {
		n = append(n, len(m.Keywords))
	}
	if got := fmt.Sprint(n); got != want {
		e.t.Fatalf("keywords per message of %s = %s, want %s (%s)", folder, got, want, why)
	}
}

// inboxWith starts an env whose INBOX of 1001 holds n voicemails, and
// returns it with a session of alice that has INBOX selected.
func inboxWith(t *testing.T, n int) (*env, *raw) {
	t.Helper()
	e := newEnv(t, nil)
	for i := 0; i < n; i++ {
		e.deposit("1001", "+1", 100)
	}
	r := e.loggedIn("alice")
	r.expect("s", "SELECT INBOX", "OK", "SELECT INBOX")
	return e, r
}

// permanentFlags returns the PERMANENTFLAGS line among lines, or "".
func permanentFlags(lines []string) string {
	for _, l := range lines {
		if strings.HasPrefix(l, "* OK [PERMANENTFLAGS") {
			return l
		}
	}
	return ""
}

// expect sends command under tag and fails the test, saying what was
// tried, unless the tagged answer starts with tag, a space and want.
func (r *raw) expect(tag, command, want, what string) {
	r.t.Helper()
	if got := r.cmd(tag, command); !strings.HasPrefix(got, tag+" "+want) {
		r.t.Fatalf("%s = %q, want %s", what, got, want)
	}
}

// appendMsg APPENDs a small e-mail with flags (a parenthesized list) to
// folder, with a non-synchronizing literal, and returns the tagged answer.
func (r *raw) appendMsg(tag, folder, flags string) string {
	r.t.Helper()
	msg := "Subject: x\r\n\r\nhello\r\n"
	r.send(fmt.Sprintf("%s APPEND %s %s {%d+}\r\n%s\r\n", tag, folder, flags, len(msg), msg))
	l := r.until(tag)
	return l[len(l)-1]
}

// TestStorePastFolderKeywordLimit: a STORE that would bring a folder past
// MaxKeywords distinct keywords is NO [LIMIT] and changes no message, not
// even those it could have given some of them, whether it adds (+FLAGS) or
// replaces (FLAGS); one that stays within it is stored.
func TestStorePastFolderKeywordLimit(t *testing.T) {
	e, r := inboxWith(t, 3)
	r.expect("c", "STORE 1 +FLAGS "+keywords("k", 1, 100), "OK", "STORE of 100 keywords")
	r.expect("d", "STORE 2:3 +FLAGS "+keywords("j", 1, 29), "NO [LIMIT]", "STORE +FLAGS taking the folder to 129 keywords")
	r.expect("e", "STORE 1:3 FLAGS "+keywords("j", 1, 29), "NO [LIMIT]", "STORE FLAGS taking the folder to 129 keywords")
	e.wantKeywordCounts(um.Inbox, "[100 0 0]", "nothing changed")
	r.expect("f", "STORE 2:3 +FLAGS "+keywords("j", 1, 28), "OK", "STORE taking the folder to 128 keywords")
	e.wantKeywordCounts(um.Inbox, "[100 28 28]", "what the commands left")
}

// TestStoreExistingKeywordsAtLimit: in a folder at MaxKeywords, keywords
// it holds may still be set, in any case, and removed; a new one is
// refused with NO [LIMIT].
func TestStoreExistingKeywordsAtLimit(t *testing.T) {
	e, r := inboxWith(t, 2)
	r.expect("c", "STORE 1 +FLAGS "+keywords("k", 1, MaxKeywords), "OK", "STORE of MaxKeywords keywords")
	r.expect("d", "STORE 2 +FLAGS (k1 K2 k128)", "OK", "STORE of keywords the full folder holds")
	r.expect("e", "STORE 1 -FLAGS (k1 k2 k3)", "OK", "STORE -FLAGS at the limit")
	r.expect("f", "STORE 2 +FLAGS ($Label1)", "NO [LIMIT]", "STORE of a new keyword in the full folder")
	e.wantKeywordCounts(um.Inbox, fmt.Sprintf("[%d 3]", MaxKeywords-3), "what the commands left")
}

// TestKeywordTooLong: a keyword longer than MaxKeywordLength is refused
// with NO [LIMIT] by STORE and by APPEND, and nothing is stored; one of
// MaxKeywordLength bytes is taken.
func TestKeywordTooLong(t *testing.T) {
	e, r := inboxWith(t, 1)
	long := strings.Repeat("x", MaxKeywordLength+1)
	if got := r.cmd("c", "STORE 1 +FLAGS (\\Seen "+long+")"); !strings.HasPrefix(got, "c NO [LIMIT]") {
		t.Fatalf("STORE of a %d-byte keyword = %q, want NO [LIMIT]", len(long), got)
	}
	if m := e.list("1001", um.Inbox)[0]; m.Flags != 0 || len(m.Keywords) != 0 {
		t.Fatalf("message after the refused STORE = %v %v, want unchanged", m.Flags, m.Keywords)
	}
	if got := r.cmd("d", "STORE 1 +FLAGS ("+long[1:]+")"); !strings.HasPrefix(got, "d OK") {
		t.Fatalf("STORE of a %d-byte keyword = %q, want OK", len(long)-1, got)
	}
	r.cmd("e", "CREATE Saved")
	msg := "Subject: x\r\n\r\nhello\r\n"
	r.send(fmt.Sprintf("f APPEND Saved (%s) {%d}\r\n", long, len(msg)))
	if got := r.line(); !strings.HasPrefix(got, "f NO [LIMIT]") {
		t.Fatalf("APPEND with a %d-byte keyword = %q, want NO [LIMIT] before the literal", len(long), got)
	}
	if n := len(e.list("1001", "Saved")); n != 0 {
		t.Fatalf("Saved holds %d messages after the refused APPEND, want 0", n)
	}
}

// TestPermanentFlagsAtKeywordLimit: PERMANENTFLAGS lists \* while a folder
// takes new keywords; the STORE that fills it sends PERMANENTFLAGS without
// \*, and so does a SELECT of the full folder.
func TestPermanentFlagsAtKeywordLimit(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+1", 100)
	r := e.loggedIn("alice")
	if p := permanentFlags(r.until0("b SELECT INBOX", "b")); !strings.Contains(p, `\*`) {
		t.Fatalf("PERMANENTFLAGS of an empty folder = %q, want \\*", p)
	}
	lines := r.until0("c STORE 1 +FLAGS "+keywords("k", 1, MaxKeywords), "c")
	p := permanentFlags(lines)
	if p == "" || strings.Contains(p, `\*`) || !strings.Contains(p, "k128") {
		t.Fatalf("STORE filling the folder sent PERMANENTFLAGS %q, want one with its keywords and without \\*", p)
	}
	p = permanentFlags(r.until0("d SELECT INBOX", "d"))
	if p == "" || strings.Contains(p, `\*`) {
		t.Fatalf("PERMANENTFLAGS of the full folder = %q, want no \\*", p)
	}
}

// TestAppendPastKeywordLimit: an APPEND whose keywords would take its
// folder past MaxKeywords is NO [LIMIT] before the literal is sent, and
// nothing is appended, whether the folder is selected or not; within the
// limit it is stored with them.
func TestAppendPastKeywordLimit(t *testing.T) {
	e := newEnv(t, nil)
	r := e.loggedIn("alice")
	r.cmd("b", "CREATE Saved")
	msg := "Subject: x\r\n\r\nhello\r\n"
	r.send(fmt.Sprintf("c APPEND Saved %s {%d}\r\n", keywords("k", 1, MaxKeywords+1), len(msg)))
	if got := r.line(); !strings.HasPrefix(got, "c NO [LIMIT]") {
		t.Fatalf("APPEND of MaxKeywords+1 keywords = %q, want NO [LIMIT] before the literal", got)
	}
	for _, a := range []struct{ tag, sel, flags, want, what string }{
		{"d", "", keywords("k", 1, 100), "d OK", "APPEND of 100 keywords"},
		// Another folder is selected: the target's keywords come from the store.
		{"f", "INBOX", keywords("j", 1, 29), "f NO [LIMIT]", "APPEND taking an unselected folder to 129 keywords"},
		// The target is selected: its keywords come from the session's view.
		{"h", "Saved", keywords("j", 1, 29), "h NO [LIMIT]", "APPEND taking the selected folder to 129 keywords"},
	} {
		if a.sel != "" {
			r.cmd("s"+a.tag, "SELECT "+a.sel)
		}
		if got := r.appendMsg(a.tag, "Saved", a.flags); !strings.HasPrefix(got, a.want) {
			t.Fatalf("%s = %q, want %s", a.what, got, a.want)
		}
	}
	e.wantKeywordCounts("Saved", "[100]", "only the APPEND within the limit")
}

// TestCopyBringsKeywordsMessageLimit: COPY is not refused for the keywords
// its copies bring, even past the folder's MaxKeywords, but a STORE never
// gives a message more than MaxKeywords, even of keywords its folder holds.
func TestCopyBringsKeywordsMessageLimit(t *testing.T) {
	e, r := inboxWith(t, 1)
	r.cmd("b", "CREATE Saved")
	if got := r.appendMsg("c", "Saved", keywords("j", 1, 100)); !strings.HasPrefix(got, "c OK") {
		t.Fatalf("APPEND of 100 keywords = %q, want OK", got)
	}
	r.cmd("e", "STORE 1 +FLAGS "+keywords("k", 1, 100))
	r.expect("f", "COPY 1 Saved", "OK", "COPY bringing Saved to 200 keywords")
	r.cmd("g", "SELECT Saved")
	r.expect("h", "STORE 1 +FLAGS "+keywords("k", 1, 100), "NO [LIMIT]", "STORE giving a message 200 keywords its folder holds")
	r.expect("i", "STORE 1 +FLAGS "+keywords("k", 1, 28), "OK", "STORE giving a message 128 keywords its folder holds")
	e.wantKeywordCounts("Saved", "[128 100]", "what the commands left")
}

// TestThunderbirdKeywords: the keywords Thunderbird sets (tags, junk
// marks, forwarded, MDN sent) are taken and leave the folder open to new
// ones (\* in PERMANENTFLAGS).
func TestThunderbirdKeywords(t *testing.T) {
	e, r := inboxWith(t, 1)
	tb := "($label1 $label2 $label3 $label4 $label5 $Junk NonJunk $Forwarded $MDNSent Junk)"
	r.expect("c", "STORE 1 +FLAGS "+tb, "OK", "STORE of Thunderbird's keywords")
	e.wantKeywordCounts(um.Inbox, "[10]", "all of them stored")
	if p := permanentFlags(r.until0("d SELECT INBOX", "d")); !strings.Contains(p, `\*`) || !strings.Contains(p, "$label5") {
		t.Fatalf("PERMANENTFLAGS = %q, want the keywords and \\*", p)
	}
}

// TestCreatePastMaxFolders: CREATE past um.Options.MaxFolders is NO
// [LIMIT], saying the limit, and the folder does not exist; INBOX and
// Trash do not count.
func TestCreatePastMaxFolders(t *testing.T) {
	e := newEnvWith(t, um.Options{MaxFolders: 2}, nil)
	r := e.loggedIn("alice")
	for i, f := range []string{"One", "Two"} {
		if got := r.cmd(fmt.Sprint("b", i), "CREATE "+f); !strings.Contains(got, "OK") {
			t.Fatalf("CREATE %s = %q, want OK within MaxFolders", f, got)
		}
	}
	got := r.cmd("c", "CREATE Three")
	if !strings.HasPrefix(got, "c NO [LIMIT]") || !strings.Contains(got, "at most 2 folders") {
		t.Fatalf("CREATE past MaxFolders = %q, want NO [LIMIT] naming the limit of 2 folders", got)
	}
	if e.hasFolder("1001", "Three") {
		t.Fatal("the refused folder exists")
	}
	if l := strings.Join(r.until0(`d LIST "" *`, "d"), "\n"); strings.Contains(l, "Three") {
		t.Fatalf("LIST = %q, want no Three", l)
	}
}

// TestAdmitKeywords is the keyword check's table: keywords new to the
// folder count against MaxKeywords and MaxKeywordLength, those it holds
// (in any case) do not, and a message never carries more than MaxKeywords.
func TestAdmitKeywords(t *testing.T) {
	set := func(prefix string, n int) keywordSet {
		s := make(keywordSet)
		for i := 1; i <= n; i++ {
			s[fmt.Sprintf("%s%d", prefix, i)] = true
		}
		return s
	}
	list := func(prefix string, from, to int) []string {
		return strings.Fields(strings.Trim(keywords(prefix, from, to), "()"))
	}
	long := strings.Repeat("x", MaxKeywordLength+1)
	for _, tt := range []struct {
		name    string
		kw      []string
		have    keywordSet
		msgs    [][]string
		refused bool
	}{
		{"none", nil, set("k", MaxKeywords), nil, false},
		{"within", list("k", 1, MaxKeywords), nil, nil, false},
		{"one too many", list("k", 1, MaxKeywords+1), nil, nil, true},
		{"duplicates count once", append(list("k", 1, MaxKeywords), "K1", "k1"), nil, nil, false},
		{"held ones at the limit", []string{"K1", "k128"}, set("k", MaxKeywords), nil, false},
		{"a new one at the limit", []string{"k1", "new"}, set("k", MaxKeywords), nil, true},
		{"too long", []string{long}, nil, nil, true},
		{"too long but held", []string{long}, keywordSet{long: true}, nil, false},
		{"message would carry too many", list("k", 1, 100), set("k", 200), [][]string{nil, list("k", 101, 129)}, true},
		{"message at the limit", list("k", 1, 100), set("k", 200), [][]string{list("k", 101, 128)}, false},
		{"folder over the limit by copies, held ones", list("k", 1, 3), set("k", 300), nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := admitKeywords(tt.kw, tt.have, tt.msgs)
			if got := errors.Is(err, um.ErrLimit); got != tt.refused || (err != nil && !got) {
				t.Fatalf("admitKeywords() = %v, want refused %v", err, tt.refused)
			}
		})
	}
}
