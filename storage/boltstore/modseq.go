package boltstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/embeddedum/um"
	bolt "go.etcd.io/bbolt"
)

var (
	_ um.ModSeqer         = (*Store)(nil)
	_ um.FolderSubscriber = (*Store)(nil)
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

// vanish records the removal of the message at l.
func (mb *mbox) vanish(l loc) error {
	n, err := mb.touch(l.validity)
	if err != nil {
		return err
	}
	return mb.vanished.Put(vanishedKey(l.validity, n, l.uid), nil)
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

// Vanished implements um.ModSeqer. The store keeps every removal while its
// folder exists (16 bytes each), so it always answers exactly.
func (s *Store) Vanished(ctx context.Context, mailbox, folder string, since uint64) ([]um.UID, uint64, error) {
	var uids []um.UID
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
		for k, _ := c.Seek(vanishedKey(fm.validity, since+1, 0)); k != nil && string(k[:4]) == string(prefix); k, _ = c.Next() {
			if len(k) != 16 {
				return fmt.Errorf("%w: removal key of %d bytes in %q", ErrCorrupt, len(k), mailbox)
			}
			uids = append(uids, um.UID(binary.BigEndian.Uint32(k[12:])))
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	slices.Sort(uids)
	return uids, 0, nil
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
