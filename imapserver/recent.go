package imapserver

import (
	"hash/maphash"
	"strconv"
	"sync"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
)

// flagRecent is RFC 3501's \Recent, which go-imap v2 no longer names.
const flagRecent imap.Flag = `\Recent`

// recentTable is the server's record of which messages were handed out as
// \Recent (RFC 3501 2.3.2): per folder of a voice mailbox, the highest UID
// a session took as recent, with the UIDVALIDITY it belongs to. UIDs grow
// as messages arrive, so everything above the mark arrived after the last
// session to take it and is recent for the next one; a UID at or below it
// was someone's already. That is one fixed-size record per folder,
// whatever the number of messages or sessions, and it is kept only in
// memory: a server that starts knows of no message taken (see doc.go).
//
// The zero value is ready to use.
type recentTable struct {
	mu    sync.Mutex
	seed  maphash.Seed
	marks map[uint64]recentMark // by recentKey
}

type recentMark struct {
	uidValidity uint32
	taken       um.UID
}

// key names a folder of a voice mailbox by a hash, so the table keeps no
// strings. Two folders that collided would only share a mark.
func (t *recentTable) keyLocked(mailbox, folder string) uint64 {
	if t.marks == nil {
		t.seed = maphash.MakeSeed()
		t.marks = make(map[uint64]recentMark)
	}
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(mailbox)
	h.WriteByte(0)
	h.WriteString(folder)
	return h.Sum64()
}

// take marks every UID up to upTo of the folder as taken, and returns the
// mark as it was: the caller has the UIDs above it and up to upTo as its
// recent messages, and no other caller ever gets them. A mark of another
// UIDVALIDITY belongs to an earlier folder of the name and is replaced.
func (t *recentTable) take(mailbox, folder string, uidValidity uint32, upTo um.UID) um.UID {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.keyLocked(mailbox, folder)
	m := t.marks[k]
	if m.uidValidity != uidValidity {
		m = recentMark{uidValidity: uidValidity}
	}
	was := m.taken
	if upTo > m.taken {
		m.taken = upTo
		t.marks[k] = m
	}
	return was
}

// taken returns the folder's mark without moving it, for EXAMINE and
// STATUS: the UIDs above it are still recent.
func (t *recentTable) taken(mailbox, folder string, uidValidity uint32) um.UID {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.marks[t.keyLocked(mailbox, folder)]
	if m.uidValidity != uidValidity {
		return 0
	}
	return m.taken
}

// rename moves a folder's mark with the folder (which keeps its
// UIDVALIDITY and messages).
func (t *recentTable) rename(mailbox, from, to string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	kf, kt := t.keyLocked(mailbox, from), t.keyLocked(mailbox, to)
	if m, ok := t.marks[kf]; ok {
		delete(t.marks, kf)
		t.marks[kt] = m
	}
}

// forget drops the mark of a deleted folder.
func (t *recentTable) forget(mailbox, folder string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.marks, t.keyLocked(mailbox, folder))
}

// noteRecent decides which of the messages that came into the view since
// it last looked are recent for this session: a session that selected the
// folder read-write takes them (those no other session took first), one
// that EXAMINEd it, or enabled IMAP4rev2 (which has no \Recent), sees as
// recent those nobody took but leaves them for the next session. It runs
// after every sync and costs one comparison when nothing came.
func (sess *session) noteRecent(v *view) {
	top := v.maxUID()
	if top <= v.recentTo || v.dead {
		return
	}
	var from um.UID
	if v.readOnly || sess.conn.rev2 {
		from = sess.srv.recent.taken(sess.mailbox, v.folder, v.uidValidity)
	} else {
		from = sess.srv.recent.take(sess.mailbox, v.folder, v.uidValidity, top)
	}
	for i := len(v.msgs) - 1; i >= 0 && v.msgs[i].msg.UID > v.recentTo; i-- {
		if v.msgs[i].msg.UID > from {
			v.msgs[i].recent = true
		}
	}
	v.recentTo = top
}

// numRecent counts the messages of the view that are recent for this
// session, for the RECENT response.
func (v *view) numRecent() int {
	n := 0
	for _, e := range v.msgs {
		if e.recent && !e.gone {
			n++
		}
	}
	return n
}

// writeRecent sends RECENT, after an EXISTS or an EXPUNGE of a recent
// message (RFC 3501 7.3.2: when the folder's size changes), if the count
// is not the one the client was last told. IMAP4rev2 has no RECENT.
func (sess *session) writeRecent(w *respWriter, v *view) {
	v.recentStale = false
	if w.c.rev2 {
		return
	}
	if n := v.numRecent(); n != v.toldRecent {
		v.toldRecent = n
		w.enc().raw("* " + strconv.Itoa(n) + " RECENT\r\n")
	}
}

// statusRecent is STATUS RECENT: the messages nobody took yet, and those
// this session holds as recent when the folder is the one it selected.
func (sess *session) statusRecent(f um.Folder, msgs []um.Message) uint32 {
	from := sess.srv.recent.taken(sess.mailbox, f.Name, f.UIDValidity)
	var n uint32
	for i := range msgs {
		if msgs[i].UID > from {
			n++
		}
	}
	if v := sess.sel; v != nil && !v.dead && v.folder == f.Name && v.uidValidity == f.UIDValidity {
		for _, e := range v.msgs {
			if e.recent && !e.gone && e.msg.UID <= from {
				n++
			}
		}
	}
	return n
}

// recentNeedsList reports whether STATUS RECENT must list the folder: only when
// messages may have arrived above the mark.
func (sess *session) recentNeedsList(f um.Folder) bool {
	return f.UIDNext > sess.srv.recent.taken(sess.mailbox, f.Name, f.UIDValidity)+1
}

// entryFlags lists the flags of a message of the view for a FETCH or
// STORE response: its flags and keywords, and \Recent when it is recent
// for this session (never under IMAP4rev2).
func entryFlags(e *entry, c *conn) []imap.Flag {
	return flagsToIMAP(&e.msg, e.recent && !c.rev2)
}
