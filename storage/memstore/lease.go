package memstore

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/embeddedum/um"
)

var (
	_ um.Leaser       = (*Store)(nil)
	_ um.OutwardState = (*Store)(nil)
)

// outward is a mailbox's leases and outward state, by purpose.
type outward struct {
	leases map[string]um.Lease
	state  map[string][]byte
}

func (mb *mailbox) outwardLocked() *outward {
	if mb.out == nil {
		mb.out = &outward{leases: make(map[string]um.Lease), state: make(map[string][]byte)}
	}
	return mb.out
}

// currentLocked returns the unexpired lease of purpose, if any.
func (o *outward) currentLocked(purpose string, now time.Time) (um.Lease, bool) {
	l, ok := o.leases[purpose]
	return l, ok && now.Before(l.Expires)
}

// AcquireLease implements um.Leaser.
func (s *Store) AcquireLease(ctx context.Context, name, purpose, node string, ttl time.Duration) (um.Lease, error) {
	if ttl <= 0 {
		return um.Lease{}, fmt.Errorf("memstore: %w: lease time to live %v", um.ErrInvalid, ttl)
	}
	mb, err := s.lockMailbox(ctx, name)
	if err != nil {
		return um.Lease{}, err
	}
	defer s.mu.Unlock()
	o, now := mb.outwardLocked(), time.Now()
	cur, held := o.currentLocked(purpose, now)
	switch {
	case held && cur.Holder != node:
		return cur, fmt.Errorf("memstore: lease %s of %q: %w: %s until %v", purpose, name, um.ErrLeaseHeld, cur.Holder, cur.Expires)
	case !held:
		cur = um.Lease{Mailbox: name, Purpose: purpose, Holder: node, Epoch: o.leases[purpose].Epoch + 1}
	}
	cur.Expires = now.Add(ttl)
	o.leases[purpose] = cur
	return cur, nil
}

// ReleaseLease implements um.Leaser.
func (s *Store) ReleaseLease(ctx context.Context, l um.Lease) error {
	mb, err := s.lockMailbox(ctx, l.Mailbox)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	o := mb.outwardLocked()
	if cur, ok := o.leases[l.Purpose]; ok && cur.Holder == l.Holder && cur.Epoch == l.Epoch {
		cur.Expires = time.Time{}
		o.leases[l.Purpose] = cur // keeps the Epoch, so the next holder's is larger
	}
	return nil
}

// CurrentLease implements um.Leaser.
func (s *Store) CurrentLease(ctx context.Context, name, purpose string) (um.Lease, error) {
	mb, err := s.lockMailbox(ctx, name)
	if err != nil {
		return um.Lease{}, err
	}
	defer s.mu.Unlock()
	if l, ok := mb.outwardLocked().currentLocked(purpose, time.Now()); ok {
		return l, nil
	}
	return um.Lease{}, fmt.Errorf("memstore: lease %s of %q: %w", purpose, name, um.ErrNotFound)
}

// GetState implements um.OutwardState.
func (s *Store) GetState(ctx context.Context, name, purpose string) ([]byte, error) {
	mb, err := s.lockMailbox(ctx, name)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	data, ok := mb.outwardLocked().state[purpose]
	if !ok {
		return nil, fmt.Errorf("memstore: %s state of %q: %w", purpose, name, um.ErrNotFound)
	}
	return slices.Clone(data), nil
}

// PutState implements um.OutwardState.
func (s *Store) PutState(ctx context.Context, l um.Lease, data []byte) error {
	if len(data) > um.MaxOutwardState {
		return fmt.Errorf("memstore: %w: state of %d bytes, more than %d", um.ErrInvalid, len(data), um.MaxOutwardState)
	}
	return s.fenced(ctx, l, func(o *outward) { o.state[l.Purpose] = slices.Clone(data) })
}

// DeleteState implements um.OutwardState.
func (s *Store) DeleteState(ctx context.Context, l um.Lease) error {
	return s.fenced(ctx, l, func(o *outward) { delete(o.state, l.Purpose) })
}

// fenced runs fn under the lock when l is the current lease of its mailbox
// and purpose.
func (s *Store) fenced(ctx context.Context, l um.Lease, fn func(o *outward)) error {
	mb, err := s.lockMailbox(ctx, l.Mailbox)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	o := mb.outwardLocked()
	cur, ok := o.currentLocked(l.Purpose, time.Now())
	if !ok || cur.Holder != l.Holder || cur.Epoch != l.Epoch {
		return fmt.Errorf("memstore: %s state of %q: %w: the lease of %s, epoch %d, is no longer current", l.Purpose, l.Mailbox, um.ErrLeaseHeld, l.Holder, l.Epoch)
	}
	fn(o)
	return nil
}
