package imapserver

import (
	"errors"
	"sort"
	"strings"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
)

// listQuery is what a LIST or LSUB asks for, after parsing.
type listQuery struct {
	ref      string
	patterns []string
	opts     imap.ListOptions
	lsub     bool
}

// listFolders answers a LIST or LSUB (RFC 3501, RFC 5258) from the names
// of the existing folders and of the subscribed ones. It is a pure
// function: the order of its result is by name.
//
//   - A level that exists only as the parent of folders ("a" of "a/b") is
//     listed as \NonExistent \HasChildren.
//   - (SUBSCRIBED) lists subscribed names, existing or not (\NonExistent);
//     with RECURSIVEMATCH, a name the patterns match whose subscribed
//     descendant they do not match gets CHILDINFO ("SUBSCRIBED").
//   - LSUB lists subscribed names; a level the pattern's "%" stops at
//     that has subscribed descendants is listed \Noselect.
func listFolders(existing, subscribed []string, q listQuery) []imap.ListData {
	exists := make(map[string]bool, len(existing))
	for _, n := range existing {
		exists[n] = true
	}
	subs := make(map[string]bool, len(subscribed))
	for _, n := range subscribed {
		subs[n] = true
	}
	// Every name that may be listed: folders, subscriptions and the
	// levels above either.
	names := map[string]bool{}
	hasChildren := map[string]bool{}
	subChildren := map[string]bool{}
	addAll := func(list []string, sub bool) {
		for _, n := range list {
			names[n] = true
			for i := strings.LastIndexByte(n, delim); i > 0; i = strings.LastIndexByte(n[:i], delim) {
				names[n[:i]] = true
				if sub {
					subChildren[n[:i]] = true
				} else {
					hasChildren[n[:i]] = true
				}
			}
		}
	}
	addAll(existing, false)
	addAll(subscribed, true)
	matches := func(n string) bool {
		for _, p := range q.patterns {
			if matchList(n, delim, q.ref, p) || (n == um.Inbox && matchList("inbox", delim, strings.ToLower(q.ref), strings.ToLower(p))) {
				return true
			}
		}
		return false
	}
	// childInfo: a subscribed descendant the patterns do not match.
	childInfo := func(n string) bool {
		for s := range subs {
			if strings.HasPrefix(s, n+string(delim)) && !matches(s) {
				return true
			}
		}
		return false
	}
	sorted := make([]string, 0, len(names))
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	var out []imap.ListData
	for _, n := range sorted {
		if !matches(n) {
			continue
		}
		d := imap.ListData{Mailbox: n, Delim: delim}
		if q.lsub {
			switch {
			case subs[n]:
			case subChildren[n] && strings.Contains(strings.Join(q.patterns, ""), "%"):
				d.Attrs = append(d.Attrs, imap.MailboxAttrNoSelect)
			default:
				continue
			}
			out = append(out, d)
			continue
		}
		o := &q.opts
		ci := false
		if o.SelectSubscribed {
			ci = o.SelectRecursiveMatch && childInfo(n)
			if !subs[n] && !ci {
				continue
			}
		} else if !exists[n] && !hasChildren[n] {
			continue
		}
		if !exists[n] {
			d.Attrs = append(d.Attrs, imap.MailboxAttrNonExistent)
		}
		if hasChildren[n] {
			d.Attrs = append(d.Attrs, imap.MailboxAttrHasChildren)
		} else if exists[n] {
			d.Attrs = append(d.Attrs, imap.MailboxAttrHasNoChildren)
		}
		if subs[n] && (o.SelectSubscribed || o.ReturnSubscribed) {
			d.Attrs = append(d.Attrs, imap.MailboxAttrSubscribed)
		}
		if ci {
			d.ChildInfo = &imap.ListDataChildInfo{Subscribed: true}
		}
		out = append(out, d)
	}
	return out
}

// matchList reports whether the folder name matches a LIST reference and
// pattern: "*" matches anything, "%" anything but the delimiter. It runs in
// time proportional to the product of the lengths, whatever the pattern.
func matchList(name string, delim byte, ref, pattern string) bool {
	pattern = ref + pattern
	// prev[j]: name[:i] matches pattern[:j].
	prev := make([]bool, len(pattern)+1)
	cur := make([]bool, len(pattern)+1)
	prev[0] = true
	for j := 1; j <= len(pattern); j++ {
		prev[j] = prev[j-1] && (pattern[j-1] == '*' || pattern[j-1] == '%')
	}
	for i := 1; i <= len(name); i++ {
		cur[0] = false
		for j := 1; j <= len(pattern); j++ {
			switch p := pattern[j-1]; p {
			case '*':
				cur[j] = cur[j-1] || prev[j]
			case '%':
				cur[j] = cur[j-1] || (prev[j] && name[i-1] != delim)
			default:
				cur[j] = prev[j-1] && name[i-1] == p
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(pattern)]
}

// subscriber returns the store's FolderSubscriber, or nil.
func (s *Server) subscriber() um.FolderSubscriber { return s.subs }

// subscribed lists the subscribed folder names: the store's, or every
// existing folder when the store keeps no subscriptions.
func (sess *session) subscribed(existing []string) ([]string, error) {
	fs := sess.srv.subscriber()
	if fs == nil {
		return existing, nil
	}
	names, err := fs.SubscribedFolders(sess.ctx, sess.mailbox)
	return names, sess.srv.imapError(err, roleSource)
}

// Subscribe keeps a subscription (RFC 3501 6.3.6) of an existing folder.
// Without a store that keeps them, it changes nothing.
func (sess *session) Subscribe(name string) (err error) {
	defer sess.guard(&err)()
	folder := folderName(name)
	// Only existing folders: so the list stays as small as the mailbox,
	// whatever names a client sends.
	if _, err := sess.mb.Folder(sess.ctx, folder); err != nil {
		return sess.srv.imapError(err, roleSource)
	}
	fs := sess.srv.subscriber()
	if fs == nil {
		return nil
	}
	return sess.srv.imapError(fs.SubscribeFolder(sess.ctx, sess.mailbox, folder), roleSource)
}

// Unsubscribe removes a subscription, if there is one; without a store
// that keeps them it changes nothing.
func (sess *session) Unsubscribe(name string) (err error) {
	defer sess.guard(&err)()
	fs := sess.srv.subscriber()
	if fs == nil {
		return nil
	}
	err = fs.UnsubscribeFolder(sess.ctx, sess.mailbox, folderName(name))
	if errors.Is(err, um.ErrNotFound) {
		return nil // not subscribed: what the client asked for holds
	}
	return sess.srv.imapError(err, roleSource)
}

func (sess *session) List(w *respWriter, ref string, patterns []string, options *imap.ListOptions) (err error) {
	defer sess.guard(&err)()
	if len(patterns) == 0 {
		// LIST "" "": the hierarchy delimiter and root.
		return w.WriteList(&imap.ListData{Attrs: []imap.MailboxAttr{imap.MailboxAttrNoSelect}, Delim: delim})
	}
	fs, err := sess.folders()
	if err != nil {
		return err
	}
	existing := make([]string, len(fs))
	for i, f := range fs {
		existing[i] = f.Name
	}
	var subs []string
	if w.lsub || options.SelectSubscribed || options.ReturnSubscribed || options.SelectRecursiveMatch {
		if subs, err = sess.subscribed(existing); err != nil {
			return err
		}
	}
	for _, d := range listFolders(existing, subs, listQuery{ref: ref, patterns: patterns, opts: *options, lsub: w.lsub}) {
		su := specialUse(d.Mailbox)
		if options.SelectSpecialUse && len(su) == 0 {
			continue
		}
		d.Attrs = append(d.Attrs, su...)
		if options.ReturnStatus != nil && !hasAttr(d.Attrs, imap.MailboxAttrNonExistent) {
			if st, err := sess.status(d.Mailbox, options.ReturnStatus); err == nil {
				d.Status = st
			}
		}
		if err := w.WriteList(&d); err != nil {
			return err
		}
	}
	return nil
}

func hasAttr(attrs []imap.MailboxAttr, a imap.MailboxAttr) bool {
	for _, x := range attrs {
		if strings.EqualFold(string(x), string(a)) {
			return true
		}
	}
	return false
}
