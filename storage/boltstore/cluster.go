package boltstore

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

var (
	_ um.Limiter       = (*Store)(nil)
	_ um.DeliveryModes = (*Store)(nil)
)

// admit checks in the write transaction that the mailbox may take n more
// messages of summed duration d outside Trash. Write transactions run one
// at a time, so no other change comes between the count and the write.
func (mb *mbox) admit(lim um.Limits, n int, d time.Duration) error {
	u, err := mb.usage()
	if err != nil {
		return err
	}
	return lim.Admit(mb.name, u, n, d)
}

// admitPlaced admits the messages ids going to a folder other than Trash:
// all of them when copying, else those that leave Trash.
func (mb *mbox) admitPlaced(lim um.Limits, ids []uuid.UUID, copying bool) error {
	trash, err := mb.folder(um.Trash)
	if err != nil {
		return err
	}
	n, d := 0, time.Duration(0)
	for _, id := range ids {
		l, r, err := mb.find(id)
		if err != nil {
			return err
		}
		if copying || l.validity == trash.validity {
			n, d = n+1, d+r.m.Duration
		}
	}
	return mb.admit(lim, n, d)
}

// AppendLimited implements um.Limiter.
func (s *Store) AppendLimited(ctx context.Context, mailbox string, m um.Message, r io.Reader, lim um.Limits) (um.Message, error) {
	return s.appendWithin(ctx, mailbox, m, r, lim)
}

// MoveLimited implements um.Limiter.
func (s *Store) MoveLimited(ctx context.Context, mailbox string, ids []uuid.UUID, to string, now time.Time, lim um.Limits) ([]um.Message, error) {
	return s.moveWithin(ctx, mailbox, ids, to, now, lim)
}

// CopyLimited implements um.Limiter.
func (s *Store) CopyLimited(ctx context.Context, mailbox string, ids []uuid.UUID, to string, newIDs []uuid.UUID, now time.Time, lim um.Limits) ([]um.Message, error) {
	return s.copyWithin(ctx, mailbox, ids, to, newIDs, now, lim)
}

// A mailbox's delivery mode is the value of keyDelivery in its bucket: the
// mode, then the nodes that hold it, sorted, each a uvarint length and its
// bytes. No key: no mode.
func encodeDelivery(mode string, nodes []string) []byte {
	b := appendString(nil, mode)
	for _, n := range nodes {
		b = appendString(b, n)
	}
	return b
}

func (mb *mbox) delivery() (mode string, nodes []string, err error) {
	v := mb.b.Get(keyDelivery)
	if v == nil {
		return "", nil, nil
	}
	d := decoder{b: v}
	mode = d.string()
	for d.err == nil && len(d.b) > 0 {
		nodes = append(nodes, d.string())
	}
	if d.err != nil {
		return "", nil, fmt.Errorf("%w: delivery mode of %q: %v", ErrCorrupt, mb.name, d.err)
	}
	return mode, nodes, nil
}

// ClaimDelivery implements um.DeliveryModes. The claim is in the database,
// so it holds after a restart until released.
func (s *Store) ClaimDelivery(ctx context.Context, mailbox, mode, node string) error {
	if mode == "" {
		return fmt.Errorf("boltstore: %w: empty delivery mode", um.ErrInvalid)
	}
	return s.update(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		held, nodes, err := mb.delivery()
		if err != nil {
			return err
		}
		if held != "" && held != mode {
			return &um.ModeConflictError{Mailbox: mailbox, Mode: mode, Held: held, Nodes: nodes}
		}
		i, found := slices.BinarySearch(nodes, node)
		if found {
			return nil
		}
		return mb.b.Put(keyDelivery, encodeDelivery(mode, slices.Insert(nodes, i, node)))
	})
}

// ReleaseDelivery implements um.DeliveryModes.
func (s *Store) ReleaseDelivery(ctx context.Context, mailbox, mode, node string) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		held, nodes, err := mb.delivery()
		if err != nil || held != mode {
			return err
		}
		i, found := slices.BinarySearch(nodes, node)
		switch {
		case !found:
			return nil
		case len(nodes) == 1:
			return mb.b.Delete(keyDelivery)
		}
		return mb.b.Put(keyDelivery, encodeDelivery(mode, slices.Delete(nodes, i, i+1)))
	})
}

// DeliveryMode implements um.DeliveryModes.
func (s *Store) DeliveryMode(ctx context.Context, mailbox string) (mode string, nodes []string, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		mode, nodes, err = mb.delivery()
		return err
	})
	if err != nil {
		return "", nil, err
	}
	return mode, nodes, nil
}
