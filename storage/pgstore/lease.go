package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/embeddedum/um"
	"github.com/jackc/pgx/v5"
)

var (
	_ um.Leaser       = (*Store)(nil)
	_ um.OutwardState = (*Store)(nil)
)

// AcquireLease implements um.Leaser with one statement: it inserts the
// lease, or takes over one that expired, or renews the caller's own, and
// returns nothing when another node holds it unexpired. Expiry is judged
// by the database's clock.
func (s *Store) AcquireLease(ctx context.Context, mailbox, purpose, node string, ttl time.Duration) (um.Lease, error) {
	for attempt := 0; ; attempt++ {
		l, err := s.acquireLease(ctx, mailbox, purpose, node, ttl)
		// Not taken, and no holder found: it expired between the two
		// statements. Try again, a few times.
		if !errors.Is(err, errLeaseExpired) || attempt == 3 {
			return l, err
		}
	}
}

// errLeaseExpired: the lease another node held expired between the
// statements of an acquire.
var errLeaseExpired = fmt.Errorf("pgstore: %w: it changed hands meanwhile", um.ErrLeaseHeld)

func (s *Store) acquireLease(ctx context.Context, mailbox, purpose, node string, ttl time.Duration) (um.Lease, error) {
	if ttl <= 0 {
		return um.Lease{}, fmt.Errorf("pgstore: %w: lease time to live %v", um.ErrInvalid, ttl)
	}
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return um.Lease{}, err
	}
	l := um.Lease{Mailbox: mailbox, Purpose: purpose}
	var epoch int64
	err = s.pool.QueryRow(ctx, `INSERT INTO um_leases AS l (mailbox_id, purpose, holder, epoch, expires)
		VALUES ($1, $2, $3, 1, now() + $4 * interval '1 microsecond')
		ON CONFLICT (mailbox_id, purpose) DO UPDATE SET
			holder = EXCLUDED.holder,
			epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.expires > now() THEN l.epoch ELSE l.epoch + 1 END,
			expires = EXCLUDED.expires
		WHERE l.holder = EXCLUDED.holder OR l.expires <= now()
		RETURNING holder, epoch, expires`, mid, purpose, node, ttl.Microseconds()).Scan(&l.Holder, &epoch, &l.Expires)
	if err == nil {
		l.Epoch = uint64(epoch)
		return l, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return um.Lease{}, s.mapErr(fmt.Errorf("pgstore: lease %s of %q: %w", purpose, mailbox, err))
	}
	cur, err := s.CurrentLease(ctx, mailbox, purpose)
	if errors.Is(err, um.ErrNotFound) {
		return um.Lease{}, errLeaseExpired
	}
	if err != nil {
		return um.Lease{}, err
	}
	return cur, fmt.Errorf("pgstore: lease %s of %q: %w: %s until %v", purpose, mailbox, um.ErrLeaseHeld, cur.Holder, cur.Expires)
}

// ReleaseLease implements um.Leaser. The row stays, expired, so that the
// next holder's Epoch is larger.
func (s *Store) ReleaseLease(ctx context.Context, l um.Lease) error {
	mid, err := s.poolMailboxID(ctx, l.Mailbox)
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `UPDATE um_leases SET expires = now() - interval '1 microsecond'
		WHERE mailbox_id = $1 AND purpose = $2 AND holder = $3 AND epoch = $4`, mid, l.Purpose, l.Holder, int64(l.Epoch)); err != nil {
		return s.mapErr(fmt.Errorf("pgstore: release lease %s of %q: %w", l.Purpose, l.Mailbox, err))
	}
	return nil
}

// CurrentLease implements um.Leaser.
func (s *Store) CurrentLease(ctx context.Context, mailbox, purpose string) (um.Lease, error) {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return um.Lease{}, err
	}
	l := um.Lease{Mailbox: mailbox, Purpose: purpose}
	var epoch int64
	err = s.pool.QueryRow(ctx, "SELECT holder, epoch, expires FROM um_leases WHERE mailbox_id = $1 AND purpose = $2 AND expires > now()",
		mid, purpose).Scan(&l.Holder, &epoch, &l.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return um.Lease{}, fmt.Errorf("pgstore: lease %s of %q: %w", purpose, mailbox, um.ErrNotFound)
	}
	if err != nil {
		return um.Lease{}, s.mapErr(fmt.Errorf("pgstore: lease %s of %q: %w", purpose, mailbox, err))
	}
	l.Epoch = uint64(epoch)
	return l, nil
}

// GetState implements um.OutwardState.
func (s *Store) GetState(ctx context.Context, mailbox, purpose string) ([]byte, error) {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return nil, err
	}
	var data []byte
	err = s.pool.QueryRow(ctx, "SELECT data FROM um_outward_state WHERE mailbox_id = $1 AND purpose = $2", mid, purpose).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pgstore: %s state of %q: %w", purpose, mailbox, um.ErrNotFound)
	}
	if err != nil {
		return nil, s.mapErr(fmt.Errorf("pgstore: %s state of %q: %w", purpose, mailbox, err))
	}
	return data, nil
}

// PutState implements um.OutwardState: one statement checks the lease and
// writes the state (see fenced).
func (s *Store) PutState(ctx context.Context, l um.Lease, data []byte) error {
	if len(data) > um.MaxOutwardState {
		return fmt.Errorf("pgstore: %w: state of %d bytes, more than %d", um.ErrInvalid, len(data), um.MaxOutwardState)
	}
	return s.fenced(ctx, l, `INSERT INTO um_outward_state (mailbox_id, purpose, data)
		SELECT $1::bigint, $2::text, $5::bytea FROM lease
		ON CONFLICT (mailbox_id, purpose) DO UPDATE SET data = EXCLUDED.data`, data)
}

// DeleteState implements um.OutwardState, fenced as PutState is.
func (s *Store) DeleteState(ctx context.Context, l um.Lease) error {
	return s.fenced(ctx, l, `DELETE FROM um_outward_state
		WHERE mailbox_id = $1::bigint AND purpose = $2::text AND EXISTS (SELECT FROM lease)`)
}

// fenced runs change, a data-modifying statement that does its work only
// when the CTE lease has a row, in one statement with the check that l is
// still current: lease is l's row, locked FOR SHARE, so a takeover commits
// before the check (which then fails) or after the change, never between.
// $1 to $4 are the mailbox's id and l's purpose, holder and epoch; args
// are $5 on.
//
// The statement goes as one message of the simple protocol: the server
// has all of it before it takes the lock, and commits before it waits on
// the client again. A lock held across round trips would outlive a
// connection that goes silent in between (a dead link: the server keeps
// the transaction open until Options.IdleInTransaction ends it, or with
// that bound off until its TCP keepalive gives up, hours by default), and
// every other node's AcquireLease would wait on it: the mailbox's work
// could not be taken over at once.
func (s *Store) fenced(ctx context.Context, l um.Lease, change string, args ...any) error {
	mid, err := s.poolMailboxID(ctx, l.Mailbox)
	if err != nil {
		return err
	}
	var current bool
	err = s.pool.QueryRow(ctx, `WITH lease AS (
			SELECT FROM um_leases WHERE mailbox_id = $1::bigint AND purpose = $2::text
				AND holder = $3::text AND epoch = $4::bigint AND expires > now() FOR SHARE
		), change AS (`+change+`)
		SELECT EXISTS (SELECT FROM lease)`,
		append([]any{pgx.QueryExecModeSimpleProtocol, mid, l.Purpose, l.Holder, int64(l.Epoch)}, args...)...).Scan(&current)
	if err != nil {
		return s.mapErr(fmt.Errorf("pgstore: %s state of %q: %w", l.Purpose, l.Mailbox, err))
	}
	if !current {
		return fmt.Errorf("pgstore: %s state of %q: %w: the lease of %s, epoch %d, is no longer current", l.Purpose, l.Mailbox, um.ErrLeaseHeld, l.Holder, l.Epoch)
	}
	return nil
}
