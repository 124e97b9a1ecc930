package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// mbox is a mailbox's buckets within one transaction.
type mbox struct {
	name     string
	b        *bolt.Bucket // the mailbox's own: keyModSeq
	folders  *bolt.Bucket
	ids      *bolt.Bucket
	msgs     *bolt.Bucket
	highest  *bolt.Bucket // UIDVALIDITY -> HighestModSeq
	vanished *bolt.Bucket // UIDVALIDITY, ModSeq, UID -> nothing
	subs     *bolt.Bucket // subscribed folder name -> nothing

	seq uint64 // this operation's ModSeq once taken (modseq.go)
}

func getMailbox(tx *bolt.Tx, name string) (*mbox, error) {
	b := tx.Bucket(bucketMailboxes).Bucket([]byte(name))
	if b == nil {
		return nil, fmt.Errorf("boltstore: mailbox %q: %w", name, um.ErrNotFound)
	}
	mb := &mbox{name: name, b: b, folders: b.Bucket(subFolders), ids: b.Bucket(subIDs), msgs: b.Bucket(subMsgs),
		highest: b.Bucket(subHighest), vanished: b.Bucket(subVanished), subs: b.Bucket(subSubs)}
	if mb.folders == nil || mb.ids == nil || mb.msgs == nil || mb.highest == nil || mb.vanished == nil || mb.subs == nil {
		return nil, fmt.Errorf("%w: mailbox %q lacks a bucket", ErrCorrupt, name)
	}
	return mb, nil
}

func (mb *mbox) folder(name string) (folderMeta, error) {
	v := mb.folders.Get([]byte(name))
	if v == nil {
		return folderMeta{}, fmt.Errorf("boltstore: folder %q of %q: %w", name, mb.name, um.ErrNotFound)
	}
	return parseFolder(v)
}

// folderName finds the folder with the given UIDVALIDITY. A mailbox has a
// handful of folders, so a scan beats keeping a second index.
func (mb *mbox) folderName(validity uint32) (string, error) {
	c := mb.folders.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v) == 8 && binary.BigEndian.Uint32(v) == validity {
			return string(k), nil
		}
	}
	return "", fmt.Errorf("%w: no folder has UIDVALIDITY %d in %q", ErrCorrupt, validity, mb.name)
}

func (mb *mbox) msgBucket(validity uint32) (*bolt.Bucket, error) {
	b := mb.msgs.Bucket(putU32(nil, validity))
	if b == nil {
		return nil, fmt.Errorf("%w: folder %d of %q has no messages bucket", ErrCorrupt, validity, mb.name)
	}
	return b, nil
}

// find returns the location and record of message id.
func (mb *mbox) find(id uuid.UUID) (loc, *record, error) {
	v := mb.ids.Get(id[:])
	if v == nil {
		return loc{}, nil, fmt.Errorf("boltstore: message %s of %q: %w", id, mb.name, um.ErrNotFound)
	}
	l, err := parseLoc(v)
	if err != nil {
		return loc{}, nil, err
	}
	b, err := mb.msgBucket(l.validity)
	if err != nil {
		return loc{}, nil, err
	}
	rv := b.Get(uidKey(l.uid))
	if rv == nil {
		return loc{}, nil, fmt.Errorf("%w: message %s of %q is indexed but missing", ErrCorrupt, id, mb.name)
	}
	r := new(record)
	if err := decodeRecord(rv, r); err != nil {
		return loc{}, nil, err
	}
	return l, r, nil
}

// message returns r as the caller sees it, with its folder and UID.
func (mb *mbox) message(l loc, r *record) (um.Message, error) {
	name, err := mb.folderName(l.validity)
	if err != nil {
		return um.Message{}, err
	}
	m := r.m
	m.Folder, m.UID = name, l.uid
	return m, nil
}

// add stores r in folder under the folder's next UID and returns it as
// stored.
func (mb *mbox) add(folder string, r *record) (um.Message, error) {
	fm, err := mb.folder(folder)
	if err != nil {
		return um.Message{}, err
	}
	if mb.ids.Get(r.m.ID[:]) != nil {
		return um.Message{}, fmt.Errorf("boltstore: message %s: %w", r.m.ID, um.ErrExists)
	}
	b, err := mb.msgBucket(fm.validity)
	if err != nil {
		return um.Message{}, err
	}
	if r.m.ModSeq, err = mb.touch(fm.validity); err != nil {
		return um.Message{}, err
	}
	l := loc{fm.validity, fm.uidNext}
	if err := b.Put(uidKey(l.uid), encodeRecord(r)); err != nil {
		return um.Message{}, err
	}
	if err := mb.ids.Put(r.m.ID[:], l.bytes()); err != nil {
		return um.Message{}, err
	}
	fm.uidNext++
	if err := mb.folders.Put([]byte(folder), fm.bytes()); err != nil {
		return um.Message{}, err
	}
	m := r.m.Clone()
	m.Folder, m.UID = folder, l.uid
	return m, nil
}

// unlink deletes the message at l from its folder and the ID index.
func (mb *mbox) unlink(id uuid.UUID, l loc) error {
	b, err := mb.msgBucket(l.validity)
	if err != nil {
		return err
	}
	if err := b.Delete(uidKey(l.uid)); err != nil {
		return err
	}
	if err := mb.vanish(l); err != nil {
		return err
	}
	return mb.ids.Delete(id[:])
}

// resolve checks that every id exists before anything changes, so a call
// naming one missing message changes nothing.
func (mb *mbox) resolve(ids []uuid.UUID) error {
	for _, id := range ids {
		if mb.ids.Get(id[:]) == nil {
			return fmt.Errorf("boltstore: message %s of %q: %w", id, mb.name, um.ErrNotFound)
		}
	}
	return nil
}

// refBlob changes the reference count of a content by delta and reports
// whether it dropped to zero.
func refBlob(tx *bolt.Tx, k blobKey, delta int) (bool, error) {
	b := tx.Bucket(bucketBlobs)
	var n int64
	if v := b.Get(k[:]); len(v) == 4 {
		n = int64(binary.BigEndian.Uint32(v))
	}
	n += int64(delta)
	if n <= 0 {
		if err := deleteSum(tx, k); err != nil {
			return false, err
		}
		return true, b.Delete(k[:])
	}
	return false, b.Put(k[:], putU32(nil, uint32(n)))
}

// unrefContent drops r's reference to its content. When it was the last, a
// content in the database is deleted with the transaction, and a content
// file or a content's range of its log segment is reported, to be freed
// after the commit.
func unrefContent(tx *bolt.Tx, r *record) (g gone, ok bool, err error) {
	zero, err := refBlob(tx, r.blob, -1)
	if err != nil || !zero {
		return gone{}, false, err
	}
	if r.inline {
		return gone{}, false, tx.Bucket(bucketContents).Delete(r.blob[:])
	}
	g.k = r.blob
	if l, inSeg, err := segLocOf(tx, r.blob); err != nil {
		return gone{}, false, err
	} else if inSeg {
		g.seg = &l
		return g, true, tx.Bucket(bucketSeg).Delete(r.blob[:])
	}
	return g, true, nil
}

func nextValidity(tx *bolt.Tx) (uint32, error) {
	meta := tx.Bucket(bucketMeta)
	v := meta.Get(keyValidity)
	if len(v) != 4 {
		return 0, fmt.Errorf("%w: UIDVALIDITY counter is %d bytes", ErrCorrupt, len(v))
	}
	n := binary.BigEndian.Uint32(v) + 1
	if n == 0 {
		n = 1
	}
	return n, meta.Put(keyValidity, putU32(nil, n))
}

func createFolder(tx *bolt.Tx, mb *mbox, name string) (um.Folder, error) {
	if name == "" {
		return um.Folder{}, fmt.Errorf("boltstore: %w: empty folder name", um.ErrInvalid)
	}
	if mb.folders.Get([]byte(name)) != nil {
		return um.Folder{}, fmt.Errorf("boltstore: folder %q: %w", name, um.ErrExists)
	}
	v, err := nextValidity(tx)
	if err != nil {
		return um.Folder{}, err
	}
	fm := folderMeta{validity: v, uidNext: 1}
	if _, err := mb.msgs.CreateBucket(putU32(nil, v)); err != nil {
		return um.Folder{}, err
	}
	if err := mb.folders.Put([]byte(name), fm.bytes()); err != nil {
		return um.Folder{}, err
	}
	h, err := mb.touch(v)
	if err != nil {
		return um.Folder{}, err
	}
	return um.Folder{Name: name, UIDValidity: v, UIDNext: 1, HighestModSeq: h}, nil
}

// CreateMailbox implements um.Store.
func (s *Store) CreateMailbox(ctx context.Context, name string) error {
	if name == "" {
		return fmt.Errorf("boltstore: %w: empty mailbox name", um.ErrInvalid)
	}
	return s.update(ctx, func(tx *bolt.Tx) error { return createMailbox(tx, name) })
}

func createMailbox(tx *bolt.Tx, name string) error {
	root := tx.Bucket(bucketMailboxes)
	if root.Bucket([]byte(name)) != nil {
		return fmt.Errorf("boltstore: mailbox %q: %w", name, um.ErrExists)
	}
	b, err := root.CreateBucket([]byte(name))
	if err != nil {
		return err
	}
	mb := &mbox{name: name, b: b}
	for _, sub := range []struct {
		dst  **bolt.Bucket
		name []byte
	}{{&mb.folders, subFolders}, {&mb.ids, subIDs}, {&mb.msgs, subMsgs}, {&mb.highest, subHighest}, {&mb.vanished, subVanished}, {&mb.subs, subSubs}} {
		if *sub.dst, err = b.CreateBucket(sub.name); err != nil {
			return err
		}
	}
	for _, f := range []string{um.Inbox, um.Trash} {
		if _, err := createFolder(tx, mb, f); err != nil {
			return err
		}
		if err := mb.subs.Put([]byte(f), nil); err != nil {
			return err
		}
	}
	return nil
}

// Mailboxes implements um.Store.
func (s *Store) Mailboxes(ctx context.Context) ([]string, error) {
	var names []string
	err := s.view(ctx, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMailboxes).ForEachBucket(func(k []byte) error {
			names = append(names, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if names == nil {
		names = []string{}
	}
	return names, nil
}

// Folders implements um.Store.
func (s *Store) Folders(ctx context.Context, mailbox string) ([]um.Folder, error) {
	var out []um.Folder
	err := s.view(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		return mb.folders.ForEach(func(k, v []byte) error {
			fm, err := parseFolder(v)
			if err != nil {
				return err
			}
			h, err := mb.highestModSeq(fm.validity)
			out = append(out, um.Folder{Name: string(k), UIDValidity: fm.validity, UIDNext: fm.uidNext, HighestModSeq: h})
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CreateFolder implements um.Store.
func (s *Store) CreateFolder(ctx context.Context, mailbox, folder string) (um.Folder, error) {
	var f um.Folder
	err := s.update(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		f, err = createFolder(tx, mb, folder)
		return err
	})
	if err != nil {
		return um.Folder{}, err
	}
	return f, nil
}

func isReserved(folder string) bool { return folder == um.Inbox || folder == um.Trash }

// RenameFolder implements um.Store. The messages stay where they are: they
// are kept under the folder's UIDVALIDITY, which a rename does not change.
func (s *Store) RenameFolder(ctx context.Context, mailbox, from, to string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		fm, err := mb.folder(from)
		if err != nil {
			return err
		}
		if isReserved(from) || isReserved(to) {
			return fmt.Errorf("boltstore: rename %q: %w", from, um.ErrReserved)
		}
		if to == "" {
			return fmt.Errorf("boltstore: %w: empty folder name", um.ErrInvalid)
		}
		if mb.folders.Get([]byte(to)) != nil {
			return fmt.Errorf("boltstore: folder %q: %w", to, um.ErrExists)
		}
		if err := mb.folders.Delete([]byte(from)); err != nil {
			return err
		}
		return mb.folders.Put([]byte(to), fm.bytes())
	})
}

// DeleteFolder implements um.Store. The content files of its messages are
// deleted after the commit; their ranges of log segments once no replay can
// read them (committer.freed).
func (s *Store) DeleteFolder(ctx context.Context, mailbox, folder string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var freed []gone
	err := s.c.submit(ctx, &txOp{released: func() []gone { return freed }, err: make(chan error, 1), fn: func(tx *bolt.Tx) error {
		freed = freed[:0]
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		fm, err := mb.folder(folder)
		if err != nil {
			return err
		}
		if isReserved(folder) {
			return fmt.Errorf("boltstore: delete %q: %w", folder, um.ErrReserved)
		}
		b, err := mb.msgBucket(fm.validity)
		if err != nil {
			return err
		}
		var r record
		if err := b.ForEach(func(_, v []byte) error {
			if err := decodeRecord(v, &r); err != nil {
				return err
			}
			if err := mb.ids.Delete(r.m.ID[:]); err != nil {
				return err
			}
			g, ok, err := unrefContent(tx, &r)
			if ok {
				freed = append(freed, g)
			}
			return err
		}); err != nil {
			return err
		}
		if err := mb.msgs.DeleteBucket(putU32(nil, fm.validity)); err != nil {
			return err
		}
		if err := mb.forget(fm.validity); err != nil {
			return err
		}
		return mb.folders.Delete([]byte(folder))
	}})
	if err != nil {
		return err
	}
	s.deleteBlobs(contentFiles(freed))
	return nil
}

// contentFiles returns the content files among gs, leaving out the ranges
// of log segments.
func contentFiles(gs []gone) []gone {
	var files []gone
	for _, g := range gs {
		if g.seg == nil {
			files = append(files, g)
		}
	}
	return files
}

// Append implements um.Store. The content and the record go to the
// deposit log in one frame, made durable with one fdatasync shared by the
// deposits that arrive meanwhile, and the message is in the database,
// visible to every reader, before Append returns. With a um.Durability in
// ctx it returns before that fdatasync, leaving the wait to the Durability. A content of up to
// inlineMax bytes is then kept in the database; a larger one stays where
// the log wrote it. See the package documentation.
func (s *Store) Append(ctx context.Context, mailbox string, m um.Message, r io.Reader) (um.Message, error) {
	return s.appendWithin(ctx, mailbox, m, r, um.Limits{})
}

// appendWithin is Append that, unless lim is zero, admits the message by
// lim in the transaction that stores it.
func (s *Store) appendWithin(ctx context.Context, mailbox string, m um.Message, r io.Reader, lim um.Limits) (um.Message, error) {
	if r == nil {
		return um.Message{}, fmt.Errorf("boltstore: %w: nil reader", um.ErrInvalid)
	}
	if err := ctx.Err(); err != nil {
		return um.Message{}, err
	}
	c, err := readContent(ctx, r)
	if err != nil {
		return um.Message{}, err
	}
	rec := &record{m: m.Clone(), blob: c.key, inline: c.inline()}
	rec.m.Size = c.size
	rec.m.Folder, rec.m.UID = "", 0
	d := &deposit{mailbox: mailbox, folder: m.Folder, lim: lim, rec: rec, sum: c.sum, data: c.data}
	// When deposit returns, the frame was written and the transaction
	// committed or rolled back, or it was never queued: nothing refers to
	// the chunks any more (the committer keeps no frame's vectors past
	// its write).
	defer c.release()
	if err := ctx.Err(); err != nil {
		return um.Message{}, err
	}
	if err := s.c.deposit(ctx, d); err != nil {
		return um.Message{}, err
	}
	return d.stored, nil
}

// List implements um.Store.
func (s *Store) List(ctx context.Context, mailbox, folder string) ([]um.Message, error) {
	var out []um.Message
	err := s.view(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		fm, err := mb.folder(folder)
		if err != nil {
			return err
		}
		b, err := mb.msgBucket(fm.validity)
		if err != nil {
			return err
		}
		var r record
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			r = record{}
			if err := decodeRecord(v, &r); err != nil {
				return err
			}
			r.m.Folder, r.m.UID = folder, um.UID(binary.BigEndian.Uint32(k))
			out = append(out, r.m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Get implements um.Store.
func (s *Store) Get(ctx context.Context, mailbox string, id uuid.UUID) (um.Message, error) {
	var m um.Message
	err := s.view(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		l, r, err := mb.find(id)
		if err != nil {
			return err
		}
		m, err = mb.message(l, r)
		return err
	})
	if err != nil {
		return um.Message{}, err
	}
	return m, nil
}

// Open implements um.Store. For a content file it returns the file itself,
// so reading it streams from the disk and holds no transaction open; a
// small content kept in the database is copied out of it. Both seek.
func (s *Store) Open(ctx context.Context, mailbox string, id uuid.UUID) (io.ReadCloser, error) {
	var k blobKey
	var data []byte
	var sl segLoc
	var inSeg bool
	err := s.view(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		_, r, err := mb.find(id)
		if err != nil {
			return err
		}
		k = r.blob
		if l, ok, err := segLocOf(tx, k); err != nil || ok {
			sl, inSeg = l, ok
			return err
		}
		if r.inline {
			v := tx.Bucket(bucketContents).Get(k[:])
			if v == nil {
				return fmt.Errorf("%w: content of message %s of %q is missing", ErrCorrupt, id, mailbox)
			}
			data = append(make([]byte, 0, len(v)), v...) // out of the memory map
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if data != nil {
		return memContent{bytes.NewReader(data)}, nil
	}
	if inSeg {
		rc, err := s.openSeg(sl)
		if err != nil {
			return nil, fmt.Errorf("boltstore: open content of message %s of %q: %w", id, mailbox, err)
		}
		return rc, nil
	}
	f, err := os.Open(s.blobPath(k))
	if isNotExist(err) {
		// Removed since the lookup.
		return nil, fmt.Errorf("boltstore: message %s of %q: %w", id, mailbox, um.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: open content: %w", err)
	}
	return f, nil
}

// SetFlags implements um.Store.
func (s *Store) SetFlags(ctx context.Context, mailbox string, ids []uuid.UUID, op um.FlagOp) ([]um.Message, error) {
	changed, _, err := s.SetFlagsIfUnchanged(ctx, mailbox, ids, op, ^uint64(0))
	return changed, err
}

// SetFlagsIfUnchanged implements um.ConditionalFlagger. The change goes
// through the log (logged.go).
func (s *Store) SetFlagsIfUnchanged(ctx context.Context, mailbox string, ids []uuid.UUID, op um.FlagOp, since uint64) (changed []um.Message, modified []uuid.UUID, err error) {
	w := &flagWrite{mailbox: mailbox, ids: ids, op: op, since: since}
	if err := s.updateLogged(ctx, w); err != nil {
		return nil, nil, err
	}
	return w.changed, w.modified, nil
}

// Move implements um.Store. The change goes through the log (logged.go).
func (s *Store) Move(ctx context.Context, mailbox string, ids []uuid.UUID, to string, now time.Time) ([]um.Message, error) {
	return s.moveWithin(ctx, mailbox, ids, to, now, um.Limits{})
}

func (s *Store) moveWithin(ctx context.Context, mailbox string, ids []uuid.UUID, to string, now time.Time, lim um.Limits) ([]um.Message, error) {
	w := &placeWrite{mailbox: mailbox, ids: ids, to: to, now: now, lim: lim}
	if err := s.updateLogged(ctx, w); err != nil {
		return nil, err
	}
	return w.out, nil
}

// Copy implements um.Store. Copies share the content file, which is
// reference-counted. The change goes through the log (logged.go).
func (s *Store) Copy(ctx context.Context, mailbox string, ids []uuid.UUID, to string, newIDs []uuid.UUID, now time.Time) ([]um.Message, error) {
	return s.copyWithin(ctx, mailbox, ids, to, newIDs, now, um.Limits{})
}

func (s *Store) copyWithin(ctx context.Context, mailbox string, ids []uuid.UUID, to string, newIDs []uuid.UUID, now time.Time, lim um.Limits) ([]um.Message, error) {
	if len(newIDs) != len(ids) {
		return nil, fmt.Errorf("boltstore: %w: %d ids, %d new ids", um.ErrInvalid, len(ids), len(newIDs))
	}
	w := &placeWrite{mailbox: mailbox, ids: ids, to: to, newIDs: newIDs, copying: true, now: now, lim: lim}
	if err := s.updateLogged(ctx, w); err != nil {
		return nil, err
	}
	return w.out, nil
}

// Remove implements um.Store. Content files no other copy names are deleted
// once the removal is durable and no replay can need them (logged.go); a
// crash in between leaves them to the next sweep.
func (s *Store) Remove(ctx context.Context, mailbox string, ids []uuid.UUID) error {
	return s.updateLogged(ctx, &removeWrite{mailbox: mailbox, ids: ids})
}

// releaser removes messages within one write transaction and collects the
// content files that no message names once it commits.
type releaser struct {
	tx   *bolt.Tx
	mb   *mbox
	gone []gone
}

// drop deletes the message at l, whose record is r, and drops its reference
// to its content: a content in the database goes with the transaction, a
// content file is noted for deletion after the commit.
func (rl *releaser) drop(l loc, r *record) error {
	if err := rl.mb.unlink(r.m.ID, l); err != nil {
		return err
	}
	g, ok, err := unrefContent(rl.tx, r)
	if err != nil {
		return err
	}
	if ok {
		rl.gone = append(rl.gone, g)
	}
	return nil
}
