package imapserver

import (
	"bytes"
	"errors"
	"io"
	"mime/quotedprintable"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-message/textproto"
	"github.com/google/uuid"
)

// live returns the entries not removed meanwhile, and their IDs.
func live(es []*entry, seqs []uint32) ([]*entry, []uint32, []uuid.UUID) {
	var oe []*entry
	var os []uint32
	var ids []uuid.UUID
	for i, e := range es {
		if e.gone {
			continue
		}
		oe = append(oe, e)
		os = append(os, seqs[i])
		ids = append(ids, e.msg.ID)
	}
	return oe, os, ids
}

// still returns the ids of the entries whose message is still in folder
// under the same UID, and marks the others gone: for a retry of STORE after
// another session removed some of them.
func (sess *session) still(folder string, es []*entry) []uuid.UUID {
	var ids []uuid.UUID
	for _, e := range es {
		m, err := sess.mb.Message(sess.ctx, e.msg.ID)
		if err == nil && m.Folder == folder && m.UID == e.msg.UID {
			ids = append(ids, e.msg.ID)
		} else {
			e.gone = true
		}
	}
	return ids
}

func (sess *session) Store(w *respWriter, numSet imap.NumSet, flags *imap.StoreFlags, options *imap.StoreOptions) (err error) {
	defer sess.guard(&err)()
	v, err := sess.live()
	if err != nil {
		return err
	}
	if v.readOnly {
		return errCannot("Folder is read-only (EXAMINE)")
	}
	es, seqs := sess.resolve(numSet)
	es, seqs, ids := live(es, seqs)
	op := um.FlagOp{}
	op.Flags, op.Keywords = flagsFromIMAP(flags.Flags)
	switch flags.Op {
	case imap.StoreFlagsAdd:
		op.Mode = um.FlagsAdd
	case imap.StoreFlagsDel:
		op.Mode = um.FlagsRemove
	default:
		op.Mode = um.FlagsReplace
	}
	if op.Mode != um.FlagsRemove && len(op.Keywords) > 0 {
		var held [][]string // what each message keeps besides op's keywords
		if op.Mode == um.FlagsAdd {
			held = make([][]string, len(es))
			for i, e := range es {
				held[i] = e.msg.Keywords
			}
		}
		if err := admitKeywords(op.Keywords, v.foldedKeywords(), held); err != nil {
			return sess.srv.imapError(err, roleSource)
		}
	}
	var leftAlone map[uuid.UUID]bool // changed after UNCHANGEDSINCE
	setFlags := func(ids []uuid.UUID) ([]um.Message, error) {
		if options.UnchangedSince == 0 {
			return sess.mb.SetFlags(sess.ctx, ids, op)
		}
		// The store checks and changes in one step, so a change another
		// session or node committed after the view's last sync counts.
		changed, modified, err := sess.mb.SetFlagsIfUnchanged(sess.ctx, ids, op, options.UnchangedSince)
		if err == nil && len(modified) > 0 {
			leftAlone = make(map[uuid.UUID]bool, len(modified))
			for _, id := range modified {
				leftAlone[id] = true
			}
		}
		return changed, err
	}
	changed, err := setFlags(ids)
	// Messages another session or node removed meanwhile are left out, and
	// the rest stored (as Dovecot does). Each retry drops at least the
	// message that went, so there are at most as many as messages.
	for attempt := 0; errors.Is(err, um.ErrNotFound) && attempt <= len(es); attempt++ {
		changed, err = setFlags(sess.still(v.folder, es))
	}
	if err != nil {
		return sess.srv.imapError(err, roleSource)
	}
	if leftAlone != nil {
		sess.modified = modifiedSet(es, seqs, leftAlone, numSet)
	}
	byID := make(map[uuid.UUID]*um.Message, len(changed))
	for i := range changed {
		byID[changed[i].ID] = &changed[i]
	}
	for _, e := range es {
		if m := byID[e.msg.ID]; m != nil {
			e.msg.Flags, e.msg.Keywords = m.Flags, m.Keywords
			v.noteModSeq(&e.msg, m.ModSeq)
			v.noteKeywords(m.Keywords)
		}
	}
	if flags.Silent && !w.c.condstore {
		return nil
	}
	if err := sess.writeKeywords(w, v); err != nil {
		return err
	}
	_, isUID := numSet.(imap.UIDSet)
	for i, e := range es {
		if e.gone || leftAlone[e.msg.ID] {
			continue
		}
		e.dirty = false
		rw := w.CreateMessage(seqs[i])
		if isUID {
			rw.WriteUID(imap.UID(e.msg.UID))
		}
		if !flags.Silent {
			rw.WriteFlags(entryFlags(e, w.c))
		}
		if w.c.condstore {
			rw.WriteModSeq(e.msg.ModSeq)
		}
		if err := rw.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Expunge serves EXPUNGE, UID EXPUNGE and the expunge of CLOSE. It names
// the messages this client was told of (for UID EXPUNGE, those of them in
// uids), and um removes those of them that still carry \Deleted in the
// selected folder, checked under the mailbox lock: a message undeleted or
// moved away meanwhile, by the phone, another client or another node,
// stays. The client gets EXPUNGE for exactly what was removed.
func (sess *session) Expunge(w *respWriter, uids *imap.UIDSet) (err error) {
	defer sess.guard(&err)()
	v, err := sess.selected()
	if err != nil {
		return err
	}
	if v.readOnly {
		return nil // CLOSE after EXAMINE expunges nothing
	}
	sess.sync()
	if v.dead {
		return nil // the messages are gone already; Poll says so
	}
	var want []um.UID
	if uids == nil {
		for _, e := range v.msgs[:v.reported] {
			if !e.gone {
				want = append(want, e.msg.UID)
			}
		}
	} else {
		// resolve reads "*" as the highest UID, as RFC 9051 wants;
		// UIDSet.Contains would not.
		named, _ := sess.resolve(*uids)
		for _, e := range named {
			if !e.gone {
				want = append(want, e.msg.UID)
			}
		}
	}
	if len(want) == 0 {
		return nil
	}
	// UIDs name messages of one folder incarnation: a folder deleted and
	// created again under the name, whose news is still on its way (from
	// another node), must not lose messages to UIDs of the old one.
	f, err := sess.mb.Folder(sess.ctx, v.folder)
	if errors.Is(err, um.ErrNotFound) || (err == nil && f.UIDValidity != v.uidValidity) {
		v.kill()
		return nil
	}
	if err != nil {
		return sess.srv.imapError(err, roleSource)
	}
	removed, err := sess.mb.Expunge(sess.ctx, v.folder, want)
	if err != nil {
		return sess.srv.imapError(err, roleSource)
	}
	sess.srv.cache.forget(sess.mailbox, removed)
	targets := make([]*entry, 0, len(removed))
	for _, m := range removed {
		if i := v.find(m.UID); i >= 0 {
			v.msgs[i].gone = true
			targets = append(targets, v.msgs[i])
		}
	}
	return sess.expungeGone(v, targets, w.WriteExpunge)
}

// expungeGone sends EXPUNGE for the entries given (all gone now), from the
// highest sequence number down, and drops them from the view. Removals by
// others stay pending for the next Poll.
func (sess *session) expungeGone(v *view, targets []*entry, write func(uint32, um.UID) error) error {
	set := make(map[*entry]bool, len(targets))
	for _, e := range targets {
		set[e] = true
	}
	for i := v.reported - 1; i >= 0; i-- {
		if !set[v.msgs[i]] {
			continue
		}
		if err := write(uint32(i+1), v.msgs[i].msg.UID); err != nil {
			return err
		}
		v.recentStale = v.recentStale || v.msgs[i].recent
		v.msgs = append(v.msgs[:i], v.msgs[i+1:]...)
		v.reported--
	}
	return nil
}

// addOwn puts messages this session added to its selected folder (COPY,
// MOVE or APPEND into it) into the view: um does not echo a session's own
// changes. f is the destination as it was read after the change.
func (sess *session) addOwn(v *view, f um.Folder, msgs []um.Message) {
	sess.sync()
	if v.dead || f.Name != v.folder {
		return
	}
	if f.UIDValidity != v.uidValidity {
		v.kill() // deleted and created again, and not yet heard of
		return
	}
	for _, m := range msgs {
		if m.UID > v.next {
			// UIDs below it were committed by another node and are not
			// announced here yet: inserting would push them below UIDs
			// the client knows, where they could never be shown. The
			// store has them all now.
			sess.reload(v)
			return
		}
		v.insert(m)
	}
	sess.noteRecent(v)
}

func (sess *session) copyData(folder string, src []*entry, dst []um.Message) (*imap.CopyData, um.Folder, error) {
	f, err := sess.mb.Folder(sess.ctx, folder)
	if err != nil {
		return nil, f, sess.srv.imapError(err, roleDest)
	}
	var from, to imap.UIDSet
	for i := range dst {
		from.AddNum(imap.UID(src[i].msg.UID))
		to.AddNum(imap.UID(dst[i].UID))
	}
	return &imap.CopyData{UIDValidity: f.UIDValidity, SourceUIDs: from, DestUIDs: to}, f, nil
}

func (sess *session) Copy(numSet imap.NumSet, dest string) (data *imap.CopyData, err error) {
	defer sess.guard(&err)()
	v, err := sess.live()
	if err != nil {
		return nil, err
	}
	folder := folderName(dest)
	es, seqs := sess.resolve(numSet)
	es, _, ids := live(es, seqs)
	if len(ids) == 0 {
		if _, err := sess.mb.Folder(sess.ctx, folder); err != nil {
			return nil, sess.srv.imapError(err, roleDest)
		}
		return nil, nil
	}
	copies, err := sess.mb.Copy(sess.ctx, ids, folder)
	if err != nil {
		return nil, sess.srv.imapError(err, roleDest)
	}
	data, f, err := sess.copyData(folder, es, copies)
	if err != nil {
		return nil, err
	}
	sess.addOwn(v, f, copies)
	return data, nil
}

func (sess *session) Move(w *respWriter, numSet imap.NumSet, dest string) (err error) {
	defer sess.guard(&err)()
	v, err := sess.live()
	if err != nil {
		return err
	}
	if v.readOnly {
		return errCannot("Folder is read-only (EXAMINE)")
	}
	folder := folderName(dest)
	es, seqs := sess.resolve(numSet)
	es, _, ids := live(es, seqs)
	if len(ids) == 0 {
		if _, err := sess.mb.Folder(sess.ctx, folder); err != nil {
			return sess.srv.imapError(err, roleDest)
		}
		return nil
	}
	moved, err := sess.mb.Move(sess.ctx, ids, folder)
	if err != nil {
		return sess.srv.imapError(err, roleDest)
	}
	data, f, err := sess.copyData(folder, es, moved)
	if err != nil {
		return err
	}
	if err := w.WriteCopyData(data); err != nil {
		return err
	}
	for _, e := range es {
		e.gone = true
	}
	if err := sess.expungeGone(v, es, w.WriteExpunge); err != nil {
		return err
	}
	sess.addOwn(v, f, moved)
	return nil
}

func (sess *session) Search(kind numKind, criteria *imap.SearchCriteria, options *imap.SearchOptions) (data *imap.SearchData, err error) {
	defer sess.guard(&err)()
	v, err := sess.live()
	if err != nil {
		return nil, err
	}
	data = &imap.SearchData{}
	var seqSet imap.SeqSet
	var uidSet imap.UIDSet
	// Each message's text is read at most once per command, however many
	// keys ask for it.
	sess.texts = make(map[*entry]*searchDoc)
	defer func() { sess.texts = nil }()
	sess.searchMod = searchModSeqs{}
	for i, e := range v.msgs[:v.reported] {
		if err := sess.ctx.Err(); err != nil {
			return nil, sess.srv.imapError(err, roleSource)
		}
		seq := uint32(i + 1)
		if e.gone || !sess.match(e, seq, criteria) {
			continue
		}
		uidSet.AddNum(imap.UID(e.msg.UID))
		if data.Count == 0 {
			sess.searchMod.min = e.msg.ModSeq
		}
		sess.searchMod.max = e.msg.ModSeq
		sess.searchMod.all = max(sess.searchMod.all, e.msg.ModSeq)
		num := seq
		if kind == numKindUID {
			num = uint32(e.msg.UID)
		} else {
			seqSet.AddNum(seq)
		}
		if data.Min == 0 || num < data.Min {
			data.Min = num
		}
		data.Max = max(data.Max, num)
		data.Count++
	}
	if kind == numKindUID {
		data.All = uidSet
	} else {
		data.All = seqSet
	}
	if options.ReturnSave {
		sess.searchRes = uidSet
	}
	return data, nil
}

func (sess *session) inSet(set imap.NumSet, seq uint32, uid um.UID) bool {
	if imap.IsSearchRes(set) {
		set = sess.searchRes
	}
	v := sess.sel
	switch s := set.(type) {
	case imap.SeqSet:
		for _, r := range s {
			if a, b := span(r.Start, r.Stop, uint32(v.reported)); seq >= a && seq <= b {
				return true
			}
		}
	case imap.UIDSet:
		for _, r := range s {
			if a, b := span(r.Start, r.Stop, imap.UID(v.maxUID())); imap.UID(uid) >= a && imap.UID(uid) <= b {
				return true
			}
		}
	}
	return false
}

func dayOf(t time.Time) time.Time {
	y, m, d := t.Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// hasFlag reports whether a message of the view has a flag, keyword or
// \Recent (for SEARCH RECENT, NEW and OLD).
func hasFlag(e *entry, f imap.Flag) bool {
	m := &e.msg
	if sf, ok := um.ParseFlag(string(f)); ok {
		return m.Flags.Has(sf)
	}
	if strings.EqualFold(string(f), string(flagRecent)) {
		return e.recent
	}
	return containsFold(m.Keywords, string(f))
}

// match evaluates criteria on one message. Only text criteria read
// content, and for voicemail only the header and text part, never audio.
func (sess *session) match(e *entry, seq uint32, c *imap.SearchCriteria) bool {
	m := &e.msg
	for _, s := range c.SeqNum {
		if !sess.inSet(s, seq, m.UID) {
			return false
		}
	}
	for _, s := range c.UID {
		if !sess.inSet(s, seq, m.UID) {
			return false
		}
	}
	if c.ModSeq != nil && m.ModSeq < c.ModSeq.ModSeq {
		return false
	}
	added := dayOf(m.Added)
	if !c.Since.IsZero() && added.Before(dayOf(c.Since)) {
		return false
	}
	if !c.Before.IsZero() && !added.Before(dayOf(c.Before)) {
		return false
	}
	for _, f := range c.Flag {
		if !hasFlag(e, f) {
			return false
		}
	}
	for _, f := range c.NotFlag {
		if hasFlag(e, f) {
			return false
		}
	}
	if c.Larger > 0 || c.Smaller > 0 {
		size := sess.email(e).Size()
		if c.Larger > 0 && size <= c.Larger {
			return false
		}
		if c.Smaller > 0 && size >= c.Smaller {
			return false
		}
	}
	if !c.SentSince.IsZero() || !c.SentBefore.IsZero() || len(c.Header) > 0 || len(c.Body) > 0 || len(c.Text) > 0 {
		doc := sess.searchDoc(e)
		if doc.err != nil {
			return false
		}
		header, body, h := doc.header, doc.body, doc.h
		if !c.SentSince.IsZero() || !c.SentBefore.IsZero() {
			sent := dayOf(doc.envelope().Date)
			if !c.SentSince.IsZero() && sent.Before(dayOf(c.SentSince)) {
				return false
			}
			if !c.SentBefore.IsZero() && !sent.Before(dayOf(c.SentBefore)) {
				return false
			}
		}
		for _, hf := range c.Header {
			found := false
			for _, val := range h.Values(hf.Key) {
				if containsFoldSub(strings.ToLower(val), hf.Value) || addressMatch(hf.Key, val, hf.Value) {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
		for _, s := range c.Body {
			if !containsFoldSub(body, s) {
				return false
			}
		}
		for _, s := range c.Text {
			if !containsFoldSub(header, s) && !containsFoldSub(body, s) {
				return false
			}
		}
	}
	for i := range c.Not {
		if sess.match(e, seq, &c.Not[i]) {
			return false
		}
	}
	for _, or := range c.Or {
		if !sess.match(e, seq, &or[0]) && !sess.match(e, seq, &or[1]) {
			return false
		}
	}
	return true
}

// addressMatch reports whether an address header's addresses, written
// plainly ("Name <user@host>", comments dropped), contain sub: so FROM
// user@host finds "<user (comment)@ host>" as Dovecot does.
func addressMatch(key, val, sub string) bool {
	switch strings.ToLower(key) {
	case "from", "to", "cc", "bcc", "sender", "reply-to":
	default:
		return false
	}
	for _, a := range parseAddressList(val) {
		name, _ := addressName(a)
		plain := strings.ToLower(name + " <" + a.Mailbox + "@" + a.Host + ">")
		if containsFoldSub(plain, sub) {
			return true
		}
	}
	return false
}

// containsFoldSub reports whether lower, which is lower case already,
// contains sub in any case.
func containsFoldSub(lower, sub string) bool {
	return strings.Contains(lower, strings.ToLower(sub))
}

const maxSearchContent = 4 << 20

// searchDoc is a message's searchable text, read once per SEARCH: the
// header and body lower-cased for substring matching, and the parsed
// header.
type searchDoc struct {
	header, body string // lower case
	h            textproto.Header
	env          *imap.Envelope
	err          error
}

func (d *searchDoc) envelope() *imap.Envelope {
	if d.env == nil {
		d.env = extractEnvelope(d.h)
	}
	return d.env
}

// searchDoc returns the searchable text of e, read at the first key of
// this SEARCH that needs it.
func (sess *session) searchDoc(e *entry) *searchDoc {
	if d := sess.texts[e]; d != nil {
		return d
	}
	d := &searchDoc{}
	header, body, err := sess.searchText(e)
	if err != nil {
		d.err = err
	} else {
		d.h, _ = textproto.ReadHeader(headerReader(header))
		d.header, d.body = strings.ToLower(string(header)), strings.ToLower(string(body))
	}
	if sess.texts != nil {
		sess.texts[e] = d
	}
	return d
}

// searchText returns the header and the searchable body of a message: for
// voicemail the decoded text part, for an appended e-mail its body.
func (sess *session) searchText(e *entry) (header, body []byte, err error) {
	em := sess.email(e)
	st := em.Structure()
	if st == nil {
		rc, err := sess.mb.OpenAudio(sess.ctx, e.msg.ID)
		if err != nil {
			return nil, nil, err
		}
		defer rc.Close()
		all, err := io.ReadAll(io.LimitReader(rc, maxSearchContent))
		if err != nil {
			return nil, nil, err
		}
		if i := bytes.Index(all, []byte("\r\n\r\n")); i >= 0 {
			return all[:i+4], all[i+4:], nil
		}
		if i := bytes.Index(all, []byte("\n\n")); i >= 0 {
			return all[:i+2], all[i+2:], nil
		}
		return all, nil, nil
	}
	header = em.Header()
	for _, p := range st.Children {
		if p.Type != "text" {
			continue
		}
		var r io.Reader = em.Range(nil, p.BodyStart, p.End-p.BodyStart)
		if p.Encoding == "quoted-printable" {
			r = quotedprintable.NewReader(r)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			return nil, nil, err
		}
		body = append(body, b...)
	}
	return header, body, nil
}
