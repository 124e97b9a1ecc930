package um

import (
	"sort"
	"strings"
)

// Flags is the set of system flags a message carries. Each has an IMAP name;
// heard is the IMAP \Seen flag.
type Flags uint8

// The system flags. Urgency is not a flag: it is set at deposit and kept in
// Message.Urgent, and an urgent voicemail starts out with FlagFlagged.
const (
	FlagHeard    Flags = 1 << iota // \Seen: the message was played or read
	FlagAnswered                   // \Answered: the caller was called back
	FlagFlagged                    // \Flagged: marked for attention
	FlagDeleted                    // \Deleted: deleted, waiting for expunge
	FlagDraft                      // \Draft: only on messages appended by mail clients
)

var flagNames = [...]struct {
	flag Flags
	name string
}{
	{FlagHeard, `\Seen`},
	{FlagAnswered, `\Answered`},
	{FlagFlagged, `\Flagged`},
	{FlagDeleted, `\Deleted`},
	{FlagDraft, `\Draft`},
}

// Has reports whether all of g are set in f.
func (f Flags) Has(g Flags) bool { return f&g == g }

// IMAPNames returns the IMAP names of the flags set in f, in a fixed order.
func (f Flags) IMAPNames() []string {
	var names []string
	for _, fn := range flagNames {
		if f&fn.flag != 0 {
			names = append(names, fn.name)
		}
	}
	return names
}

// String returns the IMAP names of f separated by spaces.
func (f Flags) String() string { return strings.Join(f.IMAPNames(), " ") }

// ParseFlag returns the system flag with the given IMAP name (case-insensitive),
// and false when name is not a system flag (a keyword, or \Recent).
func ParseFlag(name string) (Flags, bool) {
	for _, fn := range flagNames {
		if strings.EqualFold(fn.name, name) {
			return fn.flag, true
		}
	}
	return 0, false
}

// FlagMode says how a FlagOp combines with the flags a message has.
type FlagMode uint8

// The ways a FlagOp applies, as IMAP STORE's +FLAGS, -FLAGS and FLAGS.
const (
	FlagsAdd FlagMode = iota
	FlagsRemove
	FlagsReplace
)

// FlagOp is one change of flags and keywords, applied atomically to each message.
type FlagOp struct {
	Mode     FlagMode
	Flags    Flags
	Keywords []string // IMAP keywords such as $Label1 or $Junk
}

// Apply returns flags and keywords after op. The keywords come back sorted and
// free of duplicates; keywords compare case-insensitively, as IMAP requires.
func (op FlagOp) Apply(flags Flags, keywords []string) (Flags, []string) {
	switch op.Mode {
	case FlagsAdd:
		return flags | op.Flags, normalizeKeywords(append(append([]string(nil), keywords...), op.Keywords...))
	case FlagsRemove:
		var kept []string
		for _, k := range keywords {
			if !containsFold(op.Keywords, k) {
				kept = append(kept, k)
			}
		}
		return flags &^ op.Flags, normalizeKeywords(kept)
	default:
		return op.Flags, normalizeKeywords(append([]string(nil), op.Keywords...))
	}
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func normalizeKeywords(kw []string) []string {
	if len(kw) == 0 {
		return nil
	}
	// Keywords compare case-insensitively, so they sort that way too:
	// spellings of one keyword end up next to each other and merge.
	sort.Slice(kw, func(i, j int) bool {
		a, b := strings.ToLower(kw[i]), strings.ToLower(kw[j])
		if a != b {
			return a < b
		}
		return kw[i] < kw[j]
	})
	out := kw[:0]
	for _, k := range kw {
		if k == "" || (len(out) > 0 && strings.EqualFold(out[len(out)-1], k)) {
			continue
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// SameKeywords reports whether a and b hold the same keywords.
func SameKeywords(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !strings.EqualFold(a[i], b[i]) {
			return false
		}
	}
	return true
}
