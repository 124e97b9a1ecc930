package boltstore

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/embeddedum/um"
	bolt "go.etcd.io/bbolt"
)

var (
	_ um.Leaser       = (*Store)(nil)
	_ um.OutwardState = (*Store)(nil)
)

// leases are kept in memory: one process has the store open (Open locks
// the directory), so a lease only orders the Services of that process, and
// a restart, which ends the process, ends its leases too. Epochs start from
// the clock, so a lease from before a restart never matches one after it.
type leases struct {
	mu    sync.Mutex
	held  map[leaseKey]um.Lease
	epoch uint64 // last handed out
}

type leaseKey struct{ mailbox, purpose string }

func (ls *leases) currentLocked(k leaseKey, now time.Time) (um.Lease, bool) {
	l, ok := ls.held[k]
	return l, ok && now.Before(l.Expires)
}

// mailboxExists fails with ErrNotFound when mailbox does not exist.
func (s *Store) mailboxExists(ctx context.Context, mailbox string) error {
	return s.view(ctx, func(tx *bolt.Tx) error {
		_, err := getMailbox(tx, mailbox)
		return err
	})
}

// AcquireLease implements um.Leaser.
func (s *Store) AcquireLease(ctx context.Context, mailbox, purpose, node string, ttl time.Duration) (um.Lease, error) {
	if ttl <= 0 {
		return um.Lease{}, fmt.Errorf("boltstore: %w: lease time to live %v", um.ErrInvalid, ttl)
	}
	if err := s.mailboxExists(ctx, mailbox); err != nil {
		return um.Lease{}, err
	}
	ls := &s.leases
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.held == nil {
		ls.held = make(map[leaseKey]um.Lease)
		ls.epoch = uint64(time.Now().UnixNano())
	}
	k, now := leaseKey{mailbox, purpose}, time.Now()
	cur, held := ls.currentLocked(k, now)
	switch {
	case held && cur.Holder != node:
		return cur, fmt.Errorf("boltstore: lease %s of %q: %w: %s until %v", purpose, mailbox, um.ErrLeaseHeld, cur.Holder, cur.Expires)
	case !held:
		ls.epoch++
		cur = um.Lease{Mailbox: mailbox, Purpose: purpose, Holder: node, Epoch: ls.epoch}
	}
	cur.Expires = now.Add(ttl)
	ls.held[k] = cur
	return cur, nil
}

// ReleaseLease implements um.Leaser.
func (s *Store) ReleaseLease(ctx context.Context, l um.Lease) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ls := &s.leases
	ls.mu.Lock()
	defer ls.mu.Unlock()
	k := leaseKey{l.Mailbox, l.Purpose}
	if cur, ok := ls.held[k]; ok && cur.Holder == l.Holder && cur.Epoch == l.Epoch {
		delete(ls.held, k)
	}
	return nil
}

// CurrentLease implements um.Leaser.
func (s *Store) CurrentLease(ctx context.Context, mailbox, purpose string) (um.Lease, error) {
	if err := s.mailboxExists(ctx, mailbox); err != nil {
		return um.Lease{}, err
	}
	ls := &s.leases
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if l, ok := ls.currentLocked(leaseKey{mailbox, purpose}, time.Now()); ok {
		return l, nil
	}
	return um.Lease{}, fmt.Errorf("boltstore: lease %s of %q: %w", purpose, mailbox, um.ErrNotFound)
}

// checkLease fails with ErrLeaseHeld unless l is current.
func (s *Store) checkLease(l um.Lease) error {
	ls := &s.leases
	ls.mu.Lock()
	defer ls.mu.Unlock()
	cur, ok := ls.currentLocked(leaseKey{l.Mailbox, l.Purpose}, time.Now())
	if !ok || cur.Holder != l.Holder || cur.Epoch != l.Epoch {
		return fmt.Errorf("boltstore: %s state of %q: %w: the lease of %s, epoch %d, is no longer current", l.Purpose, l.Mailbox, um.ErrLeaseHeld, l.Holder, l.Epoch)
	}
	return nil
}

// GetState implements um.OutwardState.
func (s *Store) GetState(ctx context.Context, mailbox, purpose string) ([]byte, error) {
	var data []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		var v []byte
		if b := mb.b.Bucket(subOutward); b != nil {
			v = b.Get([]byte(purpose))
		}
		if v == nil {
			return fmt.Errorf("boltstore: %s state of %q: %w", purpose, mailbox, um.ErrNotFound)
		}
		data = bytes.Clone(v) // out of the memory map
		return nil
	})
	if err != nil {
		return nil, err
	}
	return data, nil
}

// PutState implements um.OutwardState. The lease is checked in the write
// transaction, which runs on the committer's goroutine: a release or
// takeover after the check is ordered after the write.
func (s *Store) PutState(ctx context.Context, l um.Lease, data []byte) error {
	if len(data) > um.MaxOutwardState {
		return fmt.Errorf("boltstore: %w: state of %d bytes, more than %d", um.ErrInvalid, len(data), um.MaxOutwardState)
	}
	return s.fenced(ctx, l, func(b *bolt.Bucket) error { return b.Put([]byte(l.Purpose), data) })
}

// DeleteState implements um.OutwardState.
func (s *Store) DeleteState(ctx context.Context, l um.Lease) error {
	return s.fenced(ctx, l, func(b *bolt.Bucket) error { return b.Delete([]byte(l.Purpose)) })
}

func (s *Store) fenced(ctx context.Context, l um.Lease, fn func(b *bolt.Bucket) error) error {
	return s.update(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, l.Mailbox)
		if err != nil {
			return err
		}
		if err := s.checkLease(l); err != nil {
			return err
		}
		b, err := mb.b.CreateBucketIfNotExists(subOutward)
		if err != nil {
			return err
		}
		return fn(b)
	})
}
