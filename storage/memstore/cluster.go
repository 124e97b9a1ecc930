package memstore

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

var (
	_ um.Limiter       = (*Store)(nil)
	_ um.DeliveryModes = (*Store)(nil)
)

// usageLocked counts what mb holds outside Trash.
func usageLocked(mb *mailbox) um.Usage {
	var u um.Usage
	for name, fo := range mb.folders {
		if name == um.Trash {
			continue
		}
		for _, e := range fo.msgs {
			u.Messages++
			u.Recorded += e.m.Duration
			u.Size += e.m.Size
		}
	}
	return u
}

// admitLocked checks, under the store's lock, that mailbox name may take
// the messages es into folder to: copies when copying, else those that
// leave Trash.
func (s *Store) admitLocked(name string, es []*entry, to string, copying bool, lim um.Limits) error {
	if to == um.Trash {
		return nil
	}
	mb, err := s.mailboxLocked(name)
	if err != nil {
		return err
	}
	n, d := 0, time.Duration(0)
	for _, e := range es {
		if copying || e.m.Folder == um.Trash {
			n, d = n+1, d+e.m.Duration
		}
	}
	return lim.Admit(name, usageLocked(mb), n, d)
}

// AppendLimited implements um.Limiter.
func (s *Store) AppendLimited(ctx context.Context, name string, m um.Message, r io.Reader, lim um.Limits) (um.Message, error) {
	return s.appendChecked(ctx, name, m, r, func() error {
		return s.admitLocked(name, []*entry{{m: m}}, m.Folder, true, lim)
	})
}

// MoveLimited implements um.Limiter.
func (s *Store) MoveLimited(ctx context.Context, name string, ids []uuid.UUID, to string, now time.Time, lim um.Limits) ([]um.Message, error) {
	return s.fileChecked(ctx, name, ids, to, nil, now, func(es []*entry) error {
		return s.admitLocked(name, es, to, false, lim)
	})
}

// CopyLimited implements um.Limiter.
func (s *Store) CopyLimited(ctx context.Context, name string, ids []uuid.UUID, to string, newIDs []uuid.UUID, now time.Time, lim um.Limits) ([]um.Message, error) {
	if len(newIDs) != len(ids) {
		return nil, fmt.Errorf("memstore: %w: %d ids, %d new ids", um.ErrInvalid, len(ids), len(newIDs))
	}
	return s.fileChecked(ctx, name, ids, to, newIDs, now, func(es []*entry) error {
		return s.admitLocked(name, es, to, true, lim)
	})
}

// claim is a mailbox's delivery mode and the nodes that hold it.
type claim struct {
	mode  string
	nodes []string // sorted
}

// ClaimDelivery implements um.DeliveryModes.
func (s *Store) ClaimDelivery(ctx context.Context, name, mode, node string) error {
	if mode == "" {
		return fmt.Errorf("memstore: %w: empty delivery mode", um.ErrInvalid)
	}
	mb, err := s.lockMailbox(ctx, name)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	c := &mb.delivery
	if c.mode != "" && c.mode != mode {
		return &um.ModeConflictError{Mailbox: name, Mode: mode, Held: c.mode, Nodes: slices.Clone(c.nodes)}
	}
	c.mode = mode
	if i, found := slices.BinarySearch(c.nodes, node); !found {
		c.nodes = slices.Insert(c.nodes, i, node)
	}
	return nil
}

// ReleaseDelivery implements um.DeliveryModes.
func (s *Store) ReleaseDelivery(ctx context.Context, name, mode, node string) error {
	mb, err := s.lockMailbox(ctx, name)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	c := &mb.delivery
	if c.mode != mode {
		return nil
	}
	if i, found := slices.BinarySearch(c.nodes, node); found {
		c.nodes = slices.Delete(c.nodes, i, i+1)
	}
	if len(c.nodes) == 0 {
		*c = claim{}
	}
	return nil
}

// DeliveryMode implements um.DeliveryModes.
func (s *Store) DeliveryMode(ctx context.Context, name string) (string, []string, error) {
	mb, err := s.lockMailbox(ctx, name)
	if err != nil {
		return "", nil, err
	}
	defer s.mu.Unlock()
	return mb.delivery.mode, slices.Clone(mb.delivery.nodes), nil
}
