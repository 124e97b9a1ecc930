package imapserver

import (
	"fmt"
	"sort"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// CONDSTORE and QRESYNC (RFC 7162) are offered when the store keeps
// modification sequences (um.ModSeqer, found through Unwrap). ModSeq
// values come from the store: Message.ModSeq and Folder.HighestModSeq.

// modSeqer returns the store's ModSeqer, or nil.
func (s *Server) modSeqer() um.ModSeqer {
	m, _ := um.StoreAs[um.ModSeqer](s.svc.Store())
	return m
}

// noteModSeq records a message's new ModSeq in the view.
func (v *view) noteModSeq(m *um.Message, ms uint64) {
	if ms > m.ModSeq {
		m.ModSeq = ms
	}
	v.highestModSeq = max(v.highestModSeq, ms)
}

// enableCondstore turns CONDSTORE on for the connection (ENABLE, or the
// first command that uses it); a selected folder's HIGHESTMODSEQ is told
// at once (RFC 7162 3.1).
func (c *conn) enableCondstore() {
	if c.condstore || c.srv.modSeqs == nil {
		return
	}
	c.condstore = true
	if v := c.sess.sel; v != nil && c.state == stateSelected {
		c.enc.raw(fmt.Sprintf("* OK [HIGHESTMODSEQ %d] Highest\r\n", v.highestModSeq))
	}
}

// changedSince keeps the entries changed after modseq.
func changedSince(es []*entry, seqs []uint32, modseq uint64) ([]*entry, []uint32) {
	var oe []*entry
	var os []uint32
	for i, e := range es {
		if e.msg.ModSeq > modseq {
			oe = append(oe, e)
			os = append(os, seqs[i])
		}
	}
	return oe, os
}

// modifiedSet names the entries whose IDs are in ids by the numbers of
// set's kind, for STORE UNCHANGEDSINCE's MODIFIED (RFC 7162 3.1.3).
func modifiedSet(es []*entry, seqs []uint32, ids map[uuid.UUID]bool, set imap.NumSet) imap.NumSet {
	var modSeqs imap.SeqSet
	var modUIDs imap.UIDSet
	for i, e := range es {
		if ids[e.msg.ID] {
			modSeqs.AddNum(seqs[i])
			modUIDs.AddNum(imap.UID(e.msg.UID))
		}
	}
	if _, isUID := set.(imap.UIDSet); isUID {
		return modUIDs
	}
	return modSeqs
}

// vanishedSince returns the UIDs among uids (all of the folder's when
// nil) removed from the selected folder after modseq, for QRESYNC's
// VANISHED (EARLIER). When the store no longer knows removals that old,
// every UID of uids the folder lacks counts.
func (sess *session) vanishedSince(v *view, modseq uint64, uids imap.UIDSet) (imap.UIDSet, error) {
	ms := sess.srv.modSeqs
	gone, exact, err := ms.Vanished(sess.ctx, sess.mailbox, v.folder, modseq)
	if err != nil {
		return nil, sess.srv.imapError(err, roleSource)
	}
	in := func(u um.UID) bool {
		if uids == nil {
			return true
		}
		for _, r := range uids {
			if a, b := span(r.Start, r.Stop, imap.UID(v.maxUID())); imap.UID(u) >= a && imap.UID(u) <= b {
				return true
			}
		}
		return false
	}
	var out imap.UIDSet
	for _, u := range gone {
		if in(u) && v.find(u) < 0 {
			out.AddNum(imap.UID(u))
		}
	}
	if exact > modseq && uids != nil {
		// Removals the store forgot: every named UID not present.
		for _, r := range uids {
			a, b := span(r.Start, r.Stop, imap.UID(v.next-1))
			for u := a; u <= b && u < imap.UID(v.next) && u-a < 1<<20; u++ {
				if v.find(um.UID(u)) < 0 {
					out.AddNum(u)
				}
			}
		}
	}
	return out, nil
}

// qresyncSelect answers SELECT's QRESYNC parameter (RFC 7162 3.2.5): the
// UIDs vanished since the client's modseq, then the messages changed since.
func (c *conn) qresyncSelect(p *qresyncParams) error {
	v := c.sess.sel
	if v == nil || p.uidValidity != v.uidValidity {
		return nil
	}
	gone, err := c.sess.vanishedSince(v, p.modSeq, p.knownUIDs)
	if err != nil {
		return err
	}
	if len(gone) > 0 {
		c.enc.raw("* VANISHED (EARLIER) " + gone.String() + "\r\n")
	}
	var changed []int
	for i, e := range v.msgs[:v.reported] {
		if e.msg.ModSeq > p.modSeq {
			changed = append(changed, i)
		}
	}
	sort.Ints(changed)
	w := &respWriter{c: c}
	for _, i := range changed {
		e := v.msgs[i]
		rw := w.CreateMessage(uint32(i + 1))
		rw.WriteUID(imap.UID(e.msg.UID))
		rw.WriteFlags(entryFlags(e, c))
		rw.WriteModSeq(e.msg.ModSeq)
		rw.Close()
	}
	return nil
}

// qresyncParams is SELECT's (QRESYNC (uidvalidity modseq [known-uids])).
type qresyncParams struct {
	uidValidity uint32
	modSeq      uint64
	knownUIDs   imap.UIDSet
}

// qresyncParams reads (uidvalidity modseq [known-uids [seq-match]]).
func (c *conn) qresyncParams(p *qresyncParams) error {
	d := &c.dec
	if err := d.expect('('); err != nil {
		return err
	}
	v, err := d.number()
	if err != nil {
		return err
	}
	p.uidValidity = v
	if err := d.sp(); err != nil {
		return err
	}
	if p.modSeq, err = d.number64(); err != nil {
		return err
	}
	if d.accept(' ') {
		if b, _ := d.peek(); b != '(' {
			set, err := d.numSet(true)
			if err != nil {
				return err
			}
			if u, ok := set.(imap.UIDSet); ok && !imap.IsSearchRes(set) {
				p.knownUIDs = u
			}
			d.accept(' ')
		}
		if d.accept('(') {
			// The sequence match data only helps a server without
			// removal history; ours has it (or falls back to known-uids).
			for {
				b, err := d.readByte()
				if err != nil {
					return err
				}
				if b == ')' {
					break
				}
			}
		}
	}
	return d.expect(')')
}

// searchModSeqs are the ModSeqs SEARCH MODSEQ answers with (RFC 7162
// 3.1.5): the highest of the messages returned.
type searchModSeqs struct {
	all, min, max uint64
}

// fetchVanished writes VANISHED (EARLIER) for the UIDs of set removed
// after modseq (UID FETCH ... (CHANGEDSINCE n VANISHED)).
func (sess *session) fetchVanished(w *respWriter, set imap.NumSet, modseq uint64) (err error) {
	defer sess.guard(&err)()
	v, err := sess.live()
	if err != nil {
		return err
	}
	uids, _ := set.(imap.UIDSet)
	if imap.IsSearchRes(set) {
		uids = sess.searchRes
	}
	gone, err := sess.vanishedSince(v, modseq, uids)
	if err != nil {
		return err
	}
	if len(gone) > 0 {
		w.enc().raw("* VANISHED (EARLIER) " + gone.String() + "\r\n")
	}
	return nil
}
