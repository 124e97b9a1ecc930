package imapserver

import (
	"strings"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
)

// Keyword limits. A client's keywords are kept by the store, held in every
// session's view of their folder and sent in each FLAGS, PERMANENTFLAGS and
// FETCH FLAGS response, so a client that may invent keywords at will must
// not be able to invent them without end.
const (
	// MaxKeywordLength is the longest keyword, in bytes, that STORE and
	// APPEND bring into a folder (Dovecot's mail_max_keyword_length is
	// 50). One the folder holds already may still be set.
	MaxKeywordLength = 64
	// MaxKeywords is how many distinct keywords (compared without regard
	// to case) STORE and APPEND let a folder hold, and a message carry
	// (Cyrus caps its user flags at 128 per mailbox too).
	MaxKeywords = 128
)

// foldKeyword is the form in which keywords that differ only in case,
// which IMAP counts as one, compare equal.
func foldKeyword(k string) string { return strings.ToLower(k) }

// keywordSet is the distinct keywords, folded, that a folder holds.
type keywordSet map[string]bool

// folderKeywords returns the keywords the messages of folder hold: those
// of the session's view when it is the selected folder (the ones the
// client was shown in FLAGS, which includes those of messages expunged
// since SELECT), else those the store lists, read only when there are
// keywords to check.
func (sess *session) folderKeywords(folder string) (keywordSet, error) {
	if v := sess.sel; v != nil && !v.dead && v.folder == folder {
		return v.foldedKeywords(), nil
	}
	msgs, err := sess.mb.List(sess.ctx, folder)
	if err != nil {
		return nil, err
	}
	set := make(keywordSet)
	for _, m := range msgs {
		for _, k := range m.Keywords {
			set[foldKeyword(k)] = true
		}
	}
	return set, nil
}

// admitKeywords checks the keywords kw that a STORE +FLAGS or FLAGS, or an
// APPEND, sets on messages of a folder that holds have. It fails with a
// *um.LimitError when a keyword new to the folder is longer than
// MaxKeywordLength, when the folder would hold more than MaxKeywords, or
// when a message would carry more: a message whose keywords are msgs[i]
// gets kw added to them, and with msgs nil (FLAGS, APPEND) a message has kw
// alone. The check comes before anything is changed, so a refused request
// changes no message.
//
// Two sessions (or nodes) that each add keywords at once each check
// against what their folder held before, so the folder may end with up to
// MaxKeywords more per such session: more than the limit, still bounded.
// COPY and MOVE are not checked: each copy brings at most MaxKeywords, so a
// folder grows by at most that per message put into it (which the mailbox's
// limits bound), and a move to Trash, which is how clients delete, must
// not fail for its keywords.
func admitKeywords(kw []string, have keywordSet, msgs [][]string) error {
	if len(kw) == 0 {
		return nil
	}
	set := make(keywordSet, len(kw))
	fresh := 0
	for _, k := range kw {
		f := foldKeyword(k)
		if set[f] {
			continue
		}
		set[f] = true
		if have[f] {
			continue
		}
		if len(k) > MaxKeywordLength {
			return &um.LimitError{What: "bytes in a keyword", Max: MaxKeywordLength}
		}
		fresh++
	}
	if fresh > 0 && len(have)+fresh > MaxKeywords {
		return &um.LimitError{What: "keywords in a folder", Max: MaxKeywords}
	}
	tooMany := &um.LimitError{What: "keywords on a message", Max: MaxKeywords}
	if msgs == nil {
		if len(set) > MaxKeywords {
			return tooMany
		}
		return nil
	}
	for _, mk := range msgs {
		n := len(set)
		for _, k := range mk {
			if !set[foldKeyword(k)] {
				n++
			}
		}
		if n > MaxKeywords {
			return tooMany
		}
	}
	return nil
}

// foldedKeywords returns the distinct keywords the view holds, folded:
// derived when a limit is checked (a STORE or APPEND with keywords, new
// keywords to announce), so the view keeps one record of its keywords.
func (v *view) foldedKeywords() keywordSet {
	set := make(keywordSet, len(v.keywords))
	for k := range v.keywords {
		set[foldKeyword(k)] = true
	}
	return set
}

// full reports whether the folder takes no new keyword: PERMANENTFLAGS
// then leaves out \* (RFC 3501 7.1).
func (v *view) full() bool { return len(v.foldedKeywords()) >= MaxKeywords }

// permanentFlags is what PERMANENTFLAGS lists: flags, and \* while the
// folder takes new keywords.
func (v *view) permanentFlags(flags []imap.Flag) []imap.Flag {
	perm := append([]imap.Flag(nil), flags...)
	if !v.full() {
		perm = append(perm, imap.FlagWildcard)
	}
	return perm
}

// writeKeywords sends FLAGS when the view holds keywords the client was
// not told of, before any FETCH that shows them (RFC 3501 7.2.6: a client
// may reject a flag that FLAGS did not list); and once the folder has
// filled up, PERMANENTFLAGS without \*, so the client stops offering new
// keywords there.
func (sess *session) writeKeywords(w *respWriter, v *view) error {
	if !v.newKW {
		return nil
	}
	v.newKW = false
	flags := mailboxFlags(v.keywords)
	if err := w.WriteMailboxFlags(flags); err != nil {
		return err
	}
	if v.full() && !v.toldFull && !v.readOnly {
		v.toldFull = true
		return w.WritePermanentFlags(v.permanentFlags(flags))
	}
	return nil
}
