package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/embeddedum/um"
	bolt "go.etcd.io/bbolt"
)

var (
	_ um.ModSeqer           = (*Store)(nil)
	_ um.FolderSubscriber   = (*Store)(nil)
	_ um.ConditionalFlagger = (*Store)(nil)
)

// modSeq returns the ModSeq of the operation under way in mb, taking the
// mailbox's next one the first time it is asked: everything one call
// changes shares one value.
func (mb *mbox) modSeq() (uint64, error) {
	if mb.seq != 0 {
		return mb.seq, nil
	}
	var n uint64
	if v := mb.b.Get(keyModSeq); v != nil {
		if len(v) != 8 {
			return 0, fmt.Errorf("%w: ModSeq counter of %q is %d bytes", ErrCorrupt, mb.name, len(v))
		}
		n = binary.BigEndian.Uint64(v)
	}
	n++
	if err := mb.b.Put(keyModSeq, binary.BigEndian.AppendUint64(nil, n)); err != nil {
		return 0, err
	}
	mb.seq = n
	return n, nil
}

// touch records a change in the folder of UIDVALIDITY validity and returns
// its ModSeq, now the folder's HighestModSeq.
func (mb *mbox) touch(validity uint32) (uint64, error) {
	n, err := mb.modSeq()
	if err != nil {
		return 0, err
	}
	return n, mb.highest.Put(putU32(nil, validity), binary.BigEndian.AppendUint64(nil, n))
}

// vanishedKept is how many removals a folder remembers for Vanished, and
// pruneEvery how often (every so many removed UIDs) the older ones are
// forgotten: a client that appends and expunges in a loop cannot grow the
// database without bound.
var vanishedKept, pruneEvery = 10000, 64

// vanish records the removal of the message at l.
func (mb *mbox) vanish(l loc) error {
	n, err := mb.touch(l.validity)
	if err != nil {
		return err
	}
	if err := mb.vanished.Put(vanishedKey(l.validity, n, l.uid), nil); err != nil {
		return err
	}
	if l.uid%um.UID(pruneEvery) == 0 {
		return mb.prune(l.validity)
	}
	return nil
}

// prune forgets all but the last vanishedKept removals of the folder, and
// leaves in their place a mark (UID 0) under the largest ModSeq forgotten,
// from which on Vanished answers exactly.
func (mb *mbox) prune(validity uint32) error {
	prefix := putU32(nil, validity)
	c := mb.vanished.Cursor()
	k, _ := c.Seek(putU32(nil, validity+1))
	if k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	for kept := 0; k != nil && bytes.HasPrefix(k, prefix) && kept < vanishedKept; k, _ = c.Prev() {
		kept++
	}
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return nil // nothing to forget
	}
	cut := binary.BigEndian.Uint64(k[4:12])
	var old [][]byte
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && binary.BigEndian.Uint64(k[4:12]) <= cut; k, _ = c.Next() {
		old = append(old, bytes.Clone(k))
	}
	for _, k := range old {
		if err := mb.vanished.Delete(k); err != nil {
			return err
		}
	}
	return mb.vanished.Put(vanishedKey(validity, cut, 0), nil)
}

func vanishedKey(validity uint32, modSeq uint64, uid um.UID) []byte {
	k := binary.BigEndian.AppendUint64(putU32(make([]byte, 0, 16), validity), modSeq)
	return binary.BigEndian.AppendUint32(k, uint32(uid))
}

func (mb *mbox) highestModSeq(validity uint32) (uint64, error) {
	v := mb.highest.Get(putU32(nil, validity))
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: HighestModSeq of folder %d of %q is %d bytes", ErrCorrupt, validity, mb.name, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// forget deletes what the ModSeq buckets hold of a deleted folder.
func (mb *mbox) forget(validity uint32) error {
	prefix := putU32(nil, validity)
	c := mb.vanished.Cursor()
	var keys [][]byte
	for k, _ := c.Seek(prefix); k != nil && len(k) == 16 && string(k[:4]) == string(prefix); k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		if err := mb.vanished.Delete(k); err != nil {
			return err
		}
	}
	return mb.highest.Delete(prefix)
}

// Vanished implements um.ModSeqer. A folder remembers its last 10,000
// removals or more (16 bytes each); exactSince is the largest ModSeq of
// those it forgot.
func (s *Store) Vanished(ctx context.Context, mailbox, folder string, since uint64) ([]um.UID, uint64, error) {
	var uids []um.UID
	var forgot uint64
	err := s.view(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		fm, err := mb.folder(folder)
		if err != nil {
			return err
		}
		prefix := putU32(nil, fm.validity)
		c := mb.vanished.Cursor()
		if k, _ := c.Seek(prefix); len(k) == 16 && bytes.HasPrefix(k, prefix) && binary.BigEndian.Uint32(k[12:]) == 0 {
			forgot = binary.BigEndian.Uint64(k[4:12])
		}
		for k, _ := c.Seek(vanishedKey(fm.validity, since+1, 0)); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if len(k) != 16 {
				return fmt.Errorf("%w: removal key of %d bytes in %q", ErrCorrupt, len(k), mailbox)
			}
			if uid := um.UID(binary.BigEndian.Uint32(k[12:])); uid != 0 {
				uids = append(uids, uid)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	slices.Sort(uids)
	return uids, forgot, nil
}

// SubscribeFolder implements um.FolderSubscriber.
func (s *Store) SubscribeFolder(ctx context.Context, mailbox, folder string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		if folder == "" {
			return fmt.Errorf("boltstore: %w: empty folder name", um.ErrInvalid)
		}
		if mb.subs.Get([]byte(folder)) != nil {
			return nil
		}
		if n := mb.subs.Stats().KeyN; n >= um.MaxSubscriptions {
			return fmt.Errorf("boltstore: subscribe %q: %w: %d subscriptions already", folder, um.ErrInvalid, n)
		}
		return mb.subs.Put([]byte(folder), nil)
	})
}

// UnsubscribeFolder implements um.FolderSubscriber.
func (s *Store) UnsubscribeFolder(ctx context.Context, mailbox, folder string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		if mb.subs.Get([]byte(folder)) == nil {
			return fmt.Errorf("boltstore: subscription %q of %q: %w", folder, mailbox, um.ErrNotFound)
		}
		return mb.subs.Delete([]byte(folder))
	})
}

// SubscribedFolders implements um.FolderSubscriber.
func (s *Store) SubscribedFolders(ctx context.Context, mailbox string) ([]string, error) {
	names := []string{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		return mb.subs.ForEach(func(k, _ []byte) error {
			names = append(names, string(k))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return names, nil
}

// migrateModSeq gives every mailbox of a schema 2 database its ModSeq
// counter, HighestModSeqs, removal log and subscriptions. It leaves what
// exists alone, so it can run over a database that has some of them.
func migrateModSeq(tx *bolt.Tx) error {
	return tx.Bucket(bucketMailboxes).ForEachBucket(func(name []byte) error {
		b := tx.Bucket(bucketMailboxes).Bucket(name)
		if b.Get(keyModSeq) == nil {
			if err := b.Put(keyModSeq, binary.BigEndian.AppendUint64(nil, 1)); err != nil {
				return err
			}
		}
		if _, err := b.CreateBucketIfNotExists(subVanished); err != nil {
			return err
		}
		h, err := b.CreateBucketIfNotExists(subHighest)
		if err != nil {
			return err
		}
		folders := b.Bucket(subFolders)
		if folders == nil {
			return fmt.Errorf("%w: mailbox %q lacks a bucket", ErrCorrupt, name)
		}
		if err := folders.ForEach(func(_, v []byte) error {
			fm, err := parseFolder(v)
			if err != nil {
				return err
			}
			if k := putU32(nil, fm.validity); h.Get(k) == nil {
				return h.Put(k, binary.BigEndian.AppendUint64(nil, 1))
			}
			return nil
		}); err != nil {
			return err
		}
		if b.Bucket(subSubs) != nil {
			return nil
		}
		subs, err := b.CreateBucket(subSubs)
		if err != nil {
			return err
		}
		for _, f := range []string{um.Inbox, um.Trash} {
			if err := subs.Put([]byte(f), nil); err != nil {
				return err
			}
		}
		return nil
	})
}
