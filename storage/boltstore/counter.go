package boltstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/embeddedum/um"
	bolt "go.etcd.io/bbolt"
)

var _ um.Counter = (*Store)(nil)

// Offsets into a message record (record.go) of the fields counting reads,
// so that it decodes no strings.
const (
	offBits  = 1 + 16 + 16
	offFlags = offBits + 1
	offSize  = offFlags + 1
)

// CountMWI implements um.Counter with one pass over INBOX that reads two
// bytes of each record.
func (s *Store) CountMWI(ctx context.Context, mailbox string) (um.MWIState, error) {
	st := um.MWIState{Mailbox: mailbox}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b, err := folderBucket(tx, mailbox, um.Inbox)
		if err != nil {
			return err
		}
		return b.ForEach(func(_, v []byte) error {
			if len(v) <= offSize {
				return fmt.Errorf("%w: message record of %d bytes", ErrCorrupt, len(v))
			}
			bits, flags := v[offBits], um.Flags(v[offFlags])
			if bits&bitRaw != 0 || flags.Has(um.FlagDeleted) {
				return nil
			}
			urgent := flags.Has(um.FlagFlagged) // urgency is \Flagged (um.Message.IsUrgent)
			if flags.Has(um.FlagHeard) {
				st.Old++
				if urgent {
					st.UrgentOld++
				}
			} else {
				st.New++
				if urgent {
					st.UrgentNew++
				}
			}
			return nil
		})
	})
	if err != nil {
		return um.MWIState{}, err
	}
	return st, nil
}

// Usage implements um.Counter, reading the size and duration of each message
// outside Trash and nothing else.
func (s *Store) Usage(ctx context.Context, mailbox string) (um.Usage, error) {
	var u um.Usage
	err := s.view(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		u, err = mb.usage()
		return err
	})
	if err != nil {
		return um.Usage{}, err
	}
	return u, nil
}

// usage counts what the mailbox holds outside Trash.
func (mb *mbox) usage() (um.Usage, error) {
	var u um.Usage
	err := mb.folders.ForEach(func(k, v []byte) error {
		if string(k) == um.Trash {
			return nil
		}
		fm, err := parseFolder(v)
		if err != nil {
			return err
		}
		b, err := mb.msgBucket(fm.validity)
		if err != nil {
			return err
		}
		return b.ForEach(func(_, v []byte) error {
			if len(v) <= offSize {
				return fmt.Errorf("%w: message record of %d bytes", ErrCorrupt, len(v))
			}
			size, n := binary.Varint(v[offSize:])
			if n <= 0 {
				return fmt.Errorf("%w: message record size", ErrCorrupt)
			}
			d, m := binary.Varint(v[offSize+n:])
			if m <= 0 {
				return fmt.Errorf("%w: message record duration", ErrCorrupt)
			}
			u.Messages++
			u.Recorded += time.Duration(d)
			u.Size += size
			return nil
		})
	})
	return u, err
}

func folderBucket(tx *bolt.Tx, mailbox, folder string) (*bolt.Bucket, error) {
	mb, err := getMailbox(tx, mailbox)
	if err != nil {
		return nil, err
	}
	fm, err := mb.folder(folder)
	if err != nil {
		return nil, err
	}
	return mb.msgBucket(fm.validity)
}
