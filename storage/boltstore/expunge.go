package boltstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/embeddedum/um"
	bolt "go.etcd.io/bbolt"
)

var _ um.Expunger = (*Store)(nil)

// Expunge implements um.Expunger: the \Deleted check and the removal are
// one transaction, so a flag another writer clears in between is honoured.
// Contents are released as Remove releases them. The change goes through
// the log (logged.go).
func (s *Store) Expunge(ctx context.Context, mailbox, folder string, uids []um.UID) ([]um.Message, error) {
	w := &removeWrite{mailbox: mailbox, expunge: true, folder: folder, uids: uids}
	if err := s.updateLogged(ctx, w); err != nil {
		return nil, err
	}
	return w.gone, nil
}

// expungeIn removes the messages of w's folder that have \Deleted, among
// w.uids unless that is nil.
func (w *removeWrite) expungeIn(rl *releaser) error {
	fm, err := rl.mb.folder(w.folder)
	if err != nil {
		return err
	}
	b, err := rl.mb.msgBucket(fm.validity)
	if err != nil {
		return err
	}
	// Decode everything before the first delete: deleting under a
	// cursor skips keys, and values point into pages a write may move.
	var recs []*record
	pick := func(uid um.UID, v []byte) error {
		if len(v) <= offFlags {
			return fmt.Errorf("%w: message record of %d bytes", ErrCorrupt, len(v))
		}
		if !um.Flags(v[offFlags]).Has(um.FlagDeleted) {
			return nil // most are not: skip decoding them
		}
		r := new(record)
		if err := decodeRecord(v, r); err != nil {
			return err
		}
		r.m.Folder, r.m.UID = w.folder, uid
		recs = append(recs, r)
		return nil
	}
	if w.uids == nil {
		err = b.ForEach(func(k, v []byte) error {
			return pick(um.UID(binary.BigEndian.Uint32(k)), v)
		})
	} else {
		err = pickUIDs(b, w.uids, pick)
	}
	if err != nil {
		return err
	}
	for _, r := range recs {
		if err := rl.drop(loc{fm.validity, r.m.UID}, r); err != nil {
			return err
		}
		w.gone = append(w.gone, r.m)
	}
	return nil
}

// pickUIDs calls pick, in UID order and once each, for the messages of b
// whose UID is in uids; UIDs no message has are skipped.
func pickUIDs(b *bolt.Bucket, uids []um.UID, pick func(um.UID, []byte) error) error {
	sorted := slices.Compact(slices.Sorted(slices.Values(uids)))
	for _, u := range sorted {
		if v := b.Get(uidKey(u)); v != nil {
			if err := pick(u, v); err != nil {
				return err
			}
		}
	}
	return nil
}
