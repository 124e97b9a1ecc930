package imapserver

import (
	"errors"
	"slices"
	"sort"
	"strings"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// view is a session's own picture of its selected folder: the messages in
// UID order as this client knows them, so sequence numbers stay right for
// this client whatever others do. Changes from um are applied to it as they
// arrive (sync) and told to the client when go-imap allows (flush):
// removals wait for a command that may send EXPUNGE.
type view struct {
	folder      string
	uidValidity uint32
	readOnly    bool
	sub         *um.Subscription

	msgs     []*entry // UID order; seq = index+1 for index < reported
	reported int      // how many of msgs the client was told of (EXISTS)
	keywords map[string]bool
	next     um.UID // every UID below is in msgs or known to be gone
	newKW    bool   // keywords appeared that the client was not sent in FLAGS
	toldFull bool   // the client was sent PERMANENTFLAGS without \* (see full)
	// highestModSeq is the highest ModSeq of a message the view holds or
	// the folder's HIGHESTMODSEQ when selected: what a client is told.
	highestModSeq uint64
	resync        bool // the folder must be reloaded from the store
	// recentTo is the highest UID noteRecent looked at; toldRecent the
	// count of recent messages the client was last told (RECENT), and
	// recentStale whether the folder's size changed for the client since
	// (EXISTS, or an EXPUNGE of a recent message).
	recentTo    um.UID
	toldRecent  int
	recentStale bool
	// dead: the folder was deleted or renamed away by someone else. Every
	// message is gone, no event applies any more (a folder created again
	// under the name is another folder, with another UIDVALIDITY), and
	// commands in it get NO [NONEXISTENT].
	dead bool
}

type entry struct {
	msg    um.Message
	r      *rendered // rendered lazily; nil until needed
	gone   bool      // removed from the store, EXPUNGE not yet sent
	dirty  bool      // flags changed, FETCH not yet sent
	recent bool      // \Recent in this session (see noteRecent)
}

func (v *view) close() {
	if v.sub != nil {
		v.sub.Close()
		v.sub = nil
	}
}

// kill marks the view dead and its messages gone, and stops its
// subscription.
func (v *view) kill() {
	v.dead, v.resync = true, false
	for _, e := range v.msgs {
		e.gone = true
	}
	v.close()
}

var errFolderGone = errNonExistent("The selected folder was deleted or renamed; select another")

// find returns the index of uid in msgs, or -1.
func (v *view) find(uid um.UID) int {
	i := sort.Search(len(v.msgs), func(i int) bool { return v.msgs[i].msg.UID >= uid })
	if i < len(v.msgs) && v.msgs[i].msg.UID == uid {
		return i
	}
	return -1
}

func (v *view) maxUID() um.UID {
	if len(v.msgs) == 0 {
		return 0
	}
	return v.msgs[len(v.msgs)-1].msg.UID
}

func (v *view) noteKeywords(kw []string) {
	for _, k := range kw {
		if !v.keywords[k] {
			v.keywords[k] = true
			v.newKW = true
		}
	}
}

// event applies one event of the mailbox's change feed. Events of one node
// come in commit order, and UIDs grow with it, so a new message normally
// has UID next, and other events concern messages the view holds or that
// are gone. An event the view cannot account for means the feeds of two
// cluster nodes crossed (this node's own change is announced at once,
// another node's a moment later, with a lower UID) or events were lost:
// the view is then reloaded from the store rather than dropped or guessed
// at, so the client is never kept from a message. A reload of a message
// that only came and went costs one listing.
func (v *view) event(ev um.Event) {
	if ev.Folder != v.folder {
		return
	}
	uid := ev.Message.UID
	if v.find(uid) < 0 {
		switch {
		case ev.Kind == um.EventAdded && uid == v.next:
			v.add(ev.Message.Clone())
		case ev.Kind != um.EventAdded && uid < v.next:
			// A flag change or removal of a message gone already.
		default:
			v.resync = true
		}
		return
	}
	switch ev.Kind {
	case um.EventFlags:
		v.setFlags(ev.Message.Clone())
	case um.EventRemoved:
		v.remove(uid)
	}
}

// takesMessage reports whether applying ev may put its message's flags
// into the view: a flag change of a message the view holds, or a message
// added at or past the next UID (a flag change of one too, which an added
// event of the same change may precede).
func (v *view) takesMessage(ev um.Event) bool {
	if ev.Folder != v.folder || (ev.Kind != um.EventAdded && ev.Kind != um.EventFlags) {
		return false
	}
	if ev.Message.UID >= v.next {
		return true
	}
	i := v.find(ev.Message.UID)
	return ev.Kind == um.EventFlags && i >= 0 && !v.msgs[i].gone
}

// add appends a message with a UID above every other in the view.
func (v *view) add(m um.Message) {
	v.highestModSeq = max(v.highestModSeq, m.ModSeq)
	v.msgs = append(v.msgs, &entry{msg: m})
	v.next = max(v.next, m.UID+1)
	v.noteKeywords(m.Keywords)
}

// insert puts a message the view lacks in its UID place, for the session's
// own COPY/MOVE into the folder and for a reload. It never shifts a
// sequence number the client knows: it reports false when the message
// would have to go before one the client was told of.
func (v *view) insert(m um.Message) bool {
	if v.find(m.UID) >= 0 {
		return true
	}
	pos := sort.Search(len(v.msgs), func(i int) bool { return v.msgs[i].msg.UID > m.UID })
	if pos < v.reported {
		return false
	}
	v.msgs = append(v.msgs, nil)
	copy(v.msgs[pos+1:], v.msgs[pos:])
	v.msgs[pos] = &entry{msg: m}
	v.next = max(v.next, m.UID+1)
	v.noteKeywords(m.Keywords)
	return true
}

func (v *view) setFlags(m um.Message) {
	i := v.find(m.UID)
	if i < 0 || v.msgs[i].gone {
		return
	}
	e := v.msgs[i]
	if e.msg.Flags == m.Flags && um.SameKeywords(e.msg.Keywords, m.Keywords) {
		v.noteModSeq(&e.msg, m.ModSeq)
		return
	}
	e.msg.Flags, e.msg.Keywords = m.Flags, m.Keywords
	v.noteModSeq(&e.msg, m.ModSeq)
	e.dirty = true
	v.noteKeywords(m.Keywords)
}

func (v *view) remove(uid um.UID) {
	if i := v.find(uid); i >= 0 {
		v.msgs[i].gone = true
	}
}

// load diffs the folder as the store has it (msgs, and its UIDNEXT) into
// the view. It returns how many messages it could not place, having UIDs
// below one the client was told of already.
func (v *view) load(msgs []um.Message, uidNext um.UID) (hidden int) {
	present := make(map[um.UID]int, len(msgs))
	for i := range msgs {
		present[msgs[i].UID] = i
	}
	for _, e := range v.msgs {
		if i, ok := present[e.msg.UID]; ok {
			v.setFlags(msgs[i])
		} else {
			e.gone = true
		}
	}
	for _, m := range msgs {
		if !v.insert(m) {
			hidden++
		}
	}
	v.next = max(v.next, uidNext)
	return hidden
}

func (sess *session) Select(name string, options *imap.SelectOptions) (data *imap.SelectData, err error) {
	defer sess.guard(&err)()
	if sess.sel != nil {
		sess.sel.close()
		sess.sel = nil
	}
	folder := folderName(name)
	// Subscribe before listing, so no change falls between the two; the
	// ones listed already are ignored when their events come.
	sub := sess.srv.svc.Subscribe(sess.mailbox, um.SubscribeOptions{Source: sess.src, Notify: sess.nc.wake})
	f, err := sess.mb.Folder(sess.ctx, folder)
	var msgs []um.Message
	if err == nil {
		msgs, err = sess.mb.List(sess.ctx, folder)
	}
	if err != nil {
		sub.Close()
		return nil, sess.srv.imapError(err, roleSource)
	}
	v := &view{folder: f.Name, uidValidity: f.UIDValidity, readOnly: options.ReadOnly, sub: sub, keywords: make(map[string]bool), next: f.UIDNext, highestModSeq: f.HighestModSeq}
	for _, m := range msgs {
		v.add(m)
	}
	v.reported, v.newKW, v.toldFull = len(v.msgs), false, v.full()
	sess.sel = v
	sess.noteRecent(v)
	v.toldRecent = v.numRecent()
	var firstUnseen uint32
	for i, e := range v.msgs {
		if !e.msg.Flags.Has(um.FlagHeard) {
			firstUnseen = uint32(i + 1)
			break
		}
	}
	flags := mailboxFlags(v.keywords)
	perm := v.permanentFlags(flags)
	if v.readOnly {
		perm = nil
	}
	var list *imap.ListData
	if su := specialUse(f.Name); su != nil {
		list = &imap.ListData{Mailbox: f.Name, Delim: delim, Attrs: su}
	}
	return &imap.SelectData{
		Flags:             flags,
		PermanentFlags:    perm,
		NumMessages:       uint32(len(v.msgs)),
		NumRecent:         uint32(v.toldRecent),
		FirstUnseenSeqNum: firstUnseen,
		UIDNext:           imap.UID(v.next),
		UIDValidity:       f.UIDValidity,
		List:              list,
	}, nil
}

func (sess *session) Unselect() (err error) {
	defer sess.guard(&err)()
	if sess.sel != nil {
		sess.sel.close()
		sess.sel = nil
	}
	return nil
}

// sync applies the queued changes of the voice mailbox to the view. It
// writes nothing.
func (sess *session) sync() {
	v := sess.sel
	if v == nil || v.dead {
		return
	}
	changes, err := v.sub.Next()
	if errors.Is(err, um.ErrOverflow) {
		v.resync = true
	}
	node := sess.srv.svc.Node()
	for _, c := range changes {
		var fs *freshState
		if c.Node != node {
			fs = sess.fresh(v, c)
		}
		for _, ev := range c.Events {
			if fs != nil && ev.Folder == v.folder {
				ev = fs.event(ev)
			}
			sess.apply(ev)
			if v.dead {
				return
			}
		}
	}
	if v.resync {
		sess.reload(v)
	}
	sess.noteRecent(v)
}

// live syncs the view and returns it, or NO [NONEXISTENT] when the folder
// went away: for the commands that act on the selected folder's messages.
func (sess *session) live() (*view, error) {
	v, err := sess.selected()
	if err != nil {
		return nil, err
	}
	sess.sync()
	if v.dead {
		return nil, errFolderGone
	}
	return v, nil
}

// reload reads the folder from the store and diffs it into the view. On
// an error other than a missing folder it leaves the view marked, for the
// next sync to try again.
func (sess *session) reload(v *view) {
	f, err := sess.mb.Folder(sess.ctx, v.folder)
	var msgs []um.Message
	if err == nil {
		msgs, err = sess.mb.List(sess.ctx, v.folder)
	}
	switch {
	case err == nil && f.UIDValidity != v.uidValidity:
		v.kill() // deleted and created again
	case err == nil:
		v.resync = false
		if n := v.load(msgs, f.UIDNext); n > 0 {
			sess.srv.logf("imapserver: %d messages of %q in %q arrived under UIDs below those the client knows; it sees them after SELECT", n, v.folder, sess.mailbox)
		}
	case errors.Is(err, um.ErrNotFound):
		v.kill()
	default:
		sess.srv.logf("imapserver: reload %q of %q: %v", v.folder, sess.mailbox, err)
	}
}

// freshState is what the store holds now of the messages a change from
// another node reports added to or changed in the selected folder. Such a
// change arrives through the store's feed, after this node announced its
// own changes at commit: a change this node made later to the same message
// may be applied already, and the flags the late event carries are older
// than it. The store's state is applied instead.
type freshState struct {
	all  bool      // msgs is the whole folder
	id   uuid.UUID // when not all: the one message read
	msgs map[um.UID]um.Message
}

// fresh reads the store's state for the events of c, a change from
// another node, that would set a message of the view from the event: with
// one read, of the message by ID for one event, of the folder for more. It
// returns nil, and marks the view for a reload, when the read fails; and
// nil when no event needs it.
func (sess *session) fresh(v *view, c um.Change) *freshState {
	var first um.Event
	n := 0
	for _, ev := range c.Events {
		if v.takesMessage(ev) {
			if n == 0 {
				first = ev
			}
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if n == 1 {
		fs := &freshState{id: first.Message.ID}
		m, err := sess.mb.Message(sess.ctx, first.Message.ID)
		switch {
		case err == nil:
			if m.Folder == v.folder {
				fs.msgs = map[um.UID]um.Message{m.UID: m}
			}
		case errors.Is(err, um.ErrNotFound):
			// Gone: fs.event makes the event a removal.
		default:
			v.resync = true
			return nil
		}
		return fs
	}
	msgs, err := sess.mb.List(sess.ctx, v.folder)
	if err != nil {
		// The reload that follows fails the same way (and is retried) or
		// finds the folder gone.
		v.resync = true
		return nil
	}
	fs := &freshState{all: true, msgs: make(map[um.UID]um.Message, len(msgs))}
	for _, m := range msgs {
		fs.msgs[m.UID] = m
	}
	return fs
}

// event returns ev, an event of the view's folder from another node, with
// the message as the store has it now; a message no longer in the folder
// under that UID becomes a removal, which the view applies as any other.
func (fs *freshState) event(ev um.Event) um.Event {
	if ev.Kind != um.EventAdded && ev.Kind != um.EventFlags {
		return ev
	}
	if !fs.all && ev.Message.ID != fs.id {
		return ev // not read: the view ignores the event or reloads
	}
	if m, ok := fs.msgs[ev.Message.UID]; ok && m.ID == ev.Message.ID {
		ev.Message = m
		return ev
	}
	return um.Event{Kind: um.EventRemoved, Folder: ev.Folder, Message: um.Message{ID: ev.Message.ID, UID: ev.Message.UID, Folder: ev.Folder}}
}

func (sess *session) apply(ev um.Event) {
	v := sess.sel
	switch ev.Kind {
	case um.EventResync:
		v.resync = true
		return
	case um.EventFolderRenamed, um.EventFolderDeleted:
		// The session's own RENAME of the folder is not echoed: it
		// follows it (see Rename).
		if ev.Folder == v.folder {
			v.kill()
		}
		return
	}
	v.event(ev)
}

// flush tells the client what sync applied: EXPUNGE (when allowed), then
// FLAGS for new keywords, EXISTS, and FETCH FLAGS.
func (sess *session) flush(w *respWriter, allowExpunge bool) error {
	v := sess.sel
	if v == nil {
		return nil
	}
	// Messages removed before the client heard of them go without a word.
	kept := v.msgs[:v.reported]
	for _, e := range v.msgs[v.reported:] {
		if !e.gone {
			kept = append(kept, e)
		}
	}
	v.msgs = kept
	if allowExpunge {
		// From the highest sequence number down, so each number sent is
		// right at the time the client reads it.
		for i := v.reported - 1; i >= 0; i-- {
			if !v.msgs[i].gone {
				continue
			}
			if err := w.WriteExpunge(uint32(i+1), v.msgs[i].msg.UID); err != nil {
				return err
			}
			v.recentStale = v.recentStale || v.msgs[i].recent
			v.msgs = append(v.msgs[:i], v.msgs[i+1:]...)
			v.reported--
		}
	}
	if err := sess.writeKeywords(w, v); err != nil {
		return err
	}
	if len(v.msgs) != v.reported {
		v.reported = len(v.msgs)
		if err := w.WriteNumMessages(uint32(v.reported)); err != nil {
			return err
		}
		v.recentStale = true
	}
	if v.recentStale {
		sess.writeRecent(w, v)
	}
	for i, e := range v.msgs {
		if !e.dirty || e.gone {
			continue
		}
		e.dirty = false
		if err := w.WriteMessageFlags(uint32(i+1), e); err != nil {
			return err
		}
	}
	return nil
}

func (sess *session) Poll(w *respWriter, allowExpunge bool) (err error) {
	defer sess.guard(&err)()
	sess.sync()
	return sess.flush(w, allowExpunge)
}

// selected returns the view, or an error when none is selected.
func (sess *session) selected() (*view, error) {
	if sess.sel == nil {
		return nil, errClientBug("No folder selected")
	}
	return sess.sel, nil
}

// resolve returns the entries of numSet among those the client knows, in
// sequence order, each once, with their sequence numbers. "*" is the last
// known one; "$" the saved search result. A set may name a message many
// times (1:*,1:*,... fits thousands of times in one command), so each range
// becomes a span of the view, the spans are sorted and merged, and each
// message is taken once: the work is the ranges' number times its logarithm
// plus the messages named, never their product.
func (sess *session) resolve(numSet imap.NumSet) ([]*entry, []uint32) {
	v := sess.sel
	if imap.IsSearchRes(numSet) {
		numSet = sess.searchRes
	}
	if v.reported == 0 {
		return nil, nil
	}
	var spans []viewSpan
	switch set := numSet.(type) {
	case imap.SeqSet:
		max := uint32(v.reported)
		for _, r := range set {
			start, stop := span(r.Start, r.Stop, max)
			if start <= max {
				spans = append(spans, viewSpan{int(start) - 1, int(min(stop, max))})
			}
		}
	case imap.UIDSet:
		maxUID := imap.UID(v.msgs[v.reported-1].msg.UID)
		for _, r := range set {
			start, stop := span(r.Start, r.Stop, maxUID)
			lo := sort.Search(v.reported, func(i int) bool { return imap.UID(v.msgs[i].msg.UID) >= start })
			hi := sort.Search(v.reported, func(i int) bool { return imap.UID(v.msgs[i].msg.UID) > stop })
			if lo < hi {
				spans = append(spans, viewSpan{lo, hi})
			}
		}
	}
	return v.take(spans)
}

// A viewSpan is the messages lo to hi-1 of a view, by index (a sequence
// number less one).
type viewSpan struct{ lo, hi int }

// take returns the messages of spans in sequence order, those of
// overlapping spans once, with their sequence numbers.
func (v *view) take(spans []viewSpan) ([]*entry, []uint32) {
	slices.SortFunc(spans, func(a, b viewSpan) int { return a.lo - b.lo })
	var out []*entry
	var seqs []uint32
	next := 0 // the first index not yet taken
	for _, s := range spans {
		for i := max(s.lo, next); i < s.hi; i++ {
			out = append(out, v.msgs[i])
			seqs = append(seqs, uint32(i+1))
		}
		next = max(next, s.hi)
	}
	return out, seqs
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// span reads one range of a sequence or UID set: 0 stands for "*", the
// highest number in use, and the ends may come in either order.
func span[T ~uint32](start, stop, max T) (T, T) {
	if start == 0 {
		start = max
	}
	if stop == 0 {
		stop = max
	}
	if start > stop {
		start, stop = stop, start
	}
	return start, stop
}
