package boltstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// A logWrite is a write other than a deposit that the log can hold: its
// frame is kind, txid, the batch's size and its place (as a deposit's),
// then body, and no data. Through the log it costs one fdatasync, shared by
// the batch, instead of bbolt's two, and it leaves the epoch open. Its apply
// must give the same outcome on the same state every time: replay runs it
// again on the state the epoch's earlier frames rebuilt.
type logWrite interface {
	kind() byte
	body(b []byte) []byte
	apply(tx *bolt.Tx) error
	need() int64 // bounds the database pages apply can add (opNeed)
}

// parseLogWrite decodes the body of a frame of one of the logWrite kinds.
func parseLogWrite(kind byte, body []byte) (logWrite, error) {
	switch kind {
	case kindFlags:
		return parseFlagWrite(body)
	case kindPlace:
		return parsePlaceWrite(body)
	case kindRemove:
		return parseRemoveWrite(body)
	}
	return nil, fmt.Errorf("frame kind %d is not a logged write", kind)
}

// flagWrite is a SetFlagsIfUnchanged: STORE, and the \Seen a FETCH of a
// body sets, the commonest write of an IMAP client.
type flagWrite struct {
	mailbox string
	ids     []uuid.UUID
	op      um.FlagOp
	since   uint64

	changed  []um.Message // the outcome of apply
	modified []uuid.UUID
}

func (w *flagWrite) kind() byte { return kindFlags }

// need counts a page path for the write and a leaf's worth per message.
func (w *flagWrite) need() int64 { return 256<<10 + 4<<10*int64(len(w.ids)) }

func (w *flagWrite) body(b []byte) []byte {
	b = appendIDs(appendString(b, w.mailbox), w.ids)
	b = append(b, byte(w.op.Mode), byte(w.op.Flags))
	b = binary.AppendUvarint(b, uint64(len(w.op.Keywords)))
	for _, k := range w.op.Keywords {
		b = appendString(b, k)
	}
	return binary.AppendUvarint(b, w.since)
}

func parseFlagWrite(body []byte) (*flagWrite, error) {
	d := decoder{b: body}
	w := &flagWrite{mailbox: d.string()}
	w.ids = d.ids()
	w.op.Mode, w.op.Flags = um.FlagMode(d.byte()), um.Flags(d.byte())
	nk := d.uvarint()
	if nk > uint64(len(d.b)) {
		return nil, fmt.Errorf("flag frame names %d keywords in %d bytes", nk, len(d.b))
	}
	for range nk {
		w.op.Keywords = append(w.op.Keywords, d.string())
	}
	w.since = d.uvarint()
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("flag frame cut short or too long")
	}
	return w, nil
}

func (w *flagWrite) apply(tx *bolt.Tx) error {
	w.changed, w.modified = nil, nil // the committer may run this again
	mb, err := getMailbox(tx, w.mailbox)
	if err != nil {
		return err
	}
	if err := mb.resolve(w.ids); err != nil {
		return err
	}
	for _, id := range w.ids {
		l, r, err := mb.find(id)
		if err != nil {
			return err
		}
		if r.m.ModSeq > w.since {
			w.modified = append(w.modified, id)
			continue
		}
		f, kw := w.op.Apply(r.m.Flags, r.m.Keywords)
		if f == r.m.Flags && um.SameKeywords(kw, r.m.Keywords) {
			continue
		}
		r.m.Flags, r.m.Keywords = f, kw
		if r.m.ModSeq, err = mb.touch(l.validity); err != nil {
			return err
		}
		b, err := mb.msgBucket(l.validity)
		if err != nil {
			return err
		}
		if err := b.Put(uidKey(l.uid), encodeRecord(r)); err != nil {
			return err
		}
		m, err := mb.message(l, r)
		if err != nil {
			return err
		}
		w.changed = append(w.changed, m.Clone())
	}
	return nil
}

// updateLogged runs w through the log. When ctx carries a um.Durability,
// it returns once w is applied (visible, and in the log's file, so a killed
// process keeps it) and leaves the wait for the log's fdatasync to the
// Durability; otherwise it returns once w is durable.
func (s *Store) updateLogged(ctx context.Context, w logWrite) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := &txOp{fn: w.apply, lw: w, err: make(chan error, 1)}
	d := um.DurabilityFrom(ctx)
	if d != nil {
		op.durable = make(chan error, 1)
	}
	if err := s.c.submit(ctx, op); err != nil {
		return err
	}
	// Content files w left unnamed go once w is durable; ranges of log
	// segments are the committer's (releaseDurable).
	files := contentFiles(releasedBy(w))
	if d == nil {
		s.deleteBlobs(files)
		return nil
	}
	// Cut short, the files are left to the next sweep.
	d.Defer(func(ctx context.Context) error { return op.waitDurable(ctx, func() { s.deleteBlobs(files) }) })
	return nil
}

// releasedBy returns the contents w left unnamed, if it is a removal.
func releasedBy(w logWrite) []gone {
	if r, ok := w.(*removeWrite); ok {
		return r.freed
	}
	return nil
}

// placeWrite is a Move, or with copying a Copy: it adds the messages ids to
// folder to in order, after unlinking each (a move) or giving it its new ID
// and a reference to its content (a copy). Unless lim is zero, it first
// admits by lim what it adds outside Trash: every message when copying,
// else those that leave Trash.
type placeWrite struct {
	mailbox string
	ids     []uuid.UUID
	to      string
	copying bool
	newIDs  []uuid.UUID // a copy's, one per id
	now     time.Time   // the new Added time, unless zero
	lim     um.Limits

	out []um.Message // the outcome of apply: the messages as added
}

func (w *placeWrite) kind() byte { return kindPlace }

func (w *placeWrite) need() int64 { return 256<<10 + 8<<10*int64(len(w.ids)) }

func (w *placeWrite) body(b []byte) []byte {
	b = appendString(b, w.mailbox)
	b = appendString(b, w.to)
	b = appendIDs(b, w.ids)
	if w.copying {
		b = appendIDs(append(b, 1), w.newIDs)
	} else {
		b = append(b, 0)
	}
	b = appendTime(b, w.now)
	b = binary.AppendUvarint(b, uint64(max(w.lim.MaxMessages, 0)))
	return binary.AppendVarint(b, int64(w.lim.MaxRecordedTime))
}

func parsePlaceWrite(body []byte) (*placeWrite, error) {
	d := decoder{b: body}
	w := &placeWrite{mailbox: d.string(), to: d.string()}
	w.ids = d.ids()
	if w.copying = d.byte() == 1; w.copying {
		w.newIDs = d.ids()
	}
	w.now = d.time()
	w.lim.MaxMessages = int(d.uvarint())
	w.lim.MaxRecordedTime = time.Duration(d.varint())
	if d.err != nil || len(d.b) != 0 || (w.copying && len(w.newIDs) != len(w.ids)) {
		return nil, fmt.Errorf("place frame cut short or malformed")
	}
	return w, nil
}

func (w *placeWrite) apply(tx *bolt.Tx) error {
	w.out = make([]um.Message, 0, len(w.ids)) // the committer may run this again
	mb, err := getMailbox(tx, w.mailbox)
	if err != nil {
		return err
	}
	if _, err := mb.folder(w.to); err != nil {
		return err
	}
	if err := mb.resolve(w.ids); err != nil {
		return err
	}
	if !w.lim.IsZero() && w.to != um.Trash {
		if err := mb.admitPlaced(w.lim, w.ids, w.copying); err != nil {
			return err
		}
	}
	for i, id := range w.ids {
		l, r, err := mb.find(id)
		if err != nil {
			return err
		}
		if !w.now.IsZero() {
			r.m.Added = w.now
		}
		if w.copying {
			r.m.ID = w.newIDs[i]
			if _, err := refBlob(tx, r.blob, +1); err != nil {
				return err
			}
		} else if err := mb.unlink(id, l); err != nil {
			return err
		}
		m, err := mb.add(w.to, r)
		if err != nil {
			return err
		}
		w.out = append(w.out, m)
	}
	return nil
}

// removeWrite is a Remove (ids) or, with expunge, an Expunge (the
// \Deleted messages of folder, among uids unless that is nil). The
// contents it leaves unnamed are released by the committer once the
// removal is durable and its epoch over (released).
type removeWrite struct {
	mailbox string
	ids     []uuid.UUID
	expunge bool
	folder  string
	uids    []um.UID

	gone  []um.Message // an Expunge's outcome: the messages removed
	freed []gone
}

func (w *removeWrite) kind() byte { return kindRemove }

func (w *removeWrite) need() int64 {
	return 256<<10 + 4<<10*int64(len(w.ids)+len(w.uids))
}

func (w *removeWrite) body(b []byte) []byte {
	b = appendString(b, w.mailbox)
	if !w.expunge {
		return appendIDs(append(b, 0), w.ids)
	}
	b = appendString(append(b, 1), w.folder)
	if w.uids == nil {
		return append(b, 0)
	}
	b = binary.AppendUvarint(append(b, 1), uint64(len(w.uids)))
	for _, u := range w.uids {
		b = binary.AppendUvarint(b, uint64(u))
	}
	return b
}

func parseRemoveWrite(body []byte) (*removeWrite, error) {
	d := decoder{b: body}
	w := &removeWrite{mailbox: d.string()}
	if w.expunge = d.byte() == 1; !w.expunge {
		w.ids = d.ids()
	} else {
		w.folder = d.string()
		if d.byte() == 1 {
			n := d.uvarint()
			if n > uint64(len(d.b)) {
				return nil, fmt.Errorf("remove frame names %d UIDs in %d bytes", n, len(d.b))
			}
			w.uids = make([]um.UID, n)
			for i := range w.uids {
				w.uids[i] = um.UID(d.uvarint())
			}
		}
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("remove frame cut short or too long")
	}
	return w, nil
}

func (w *removeWrite) apply(tx *bolt.Tx) error {
	w.gone, w.freed = nil, nil // the committer may run this again
	mb, err := getMailbox(tx, w.mailbox)
	if err != nil {
		return err
	}
	rl := &releaser{tx: tx, mb: mb}
	if w.expunge {
		err = w.expungeIn(rl)
	} else {
		err = w.removeIDs(rl)
	}
	w.freed = rl.gone
	return err
}

func (w *removeWrite) removeIDs(rl *releaser) error {
	if err := rl.mb.resolve(w.ids); err != nil {
		return err
	}
	for _, id := range w.ids {
		if rl.mb.ids.Get(id[:]) == nil {
			continue // named twice
		}
		l, r, err := rl.mb.find(id)
		if err != nil {
			return err
		}
		if err := rl.drop(l, r); err != nil {
			return err
		}
	}
	return nil
}

func appendIDs(b []byte, ids []uuid.UUID) []byte {
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		b = append(b, id[:]...)
	}
	return b
}

func (d *decoder) ids() []uuid.UUID {
	n := d.uvarint()
	if n > uint64(len(d.b))/16 {
		d.err = errShort
		return nil
	}
	ids := make([]uuid.UUID, n)
	for i := range ids {
		copy(ids[i][:], d.bytes(16))
	}
	return ids
}
