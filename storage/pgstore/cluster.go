package pgstore

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

var (
	_ um.Limiter       = (*Store)(nil)
	_ um.DeliveryModes = (*Store)(nil)
)

// admit checks, unless lim is zero, that mailbox mid may take n more
// messages of summed duration d outside Trash. The caller holds the
// mailbox's row (nextModSeq), which every writer that adds a message takes
// before it commits, so the count sees every addition committed before
// and none can commit between the count and this transaction's commit:
// nodes depositing at once are admitted one after another.
func admit(ctx context.Context, tx pgx.Tx, mid int64, mailbox string, lim um.Limits, n int, d time.Duration) error {
	if lim.IsZero() || n <= 0 {
		return nil
	}
	u, err := usage(ctx, tx, mid)
	if err != nil {
		return fmt.Errorf("pgstore: usage of %q: %w", mailbox, err)
	}
	return lim.Admit(mailbox, u, n, d)
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

// ClaimDelivery implements um.DeliveryModes. The claim locks the mailbox's
// row, so of two nodes claiming two modes at once one waits for the other
// and then sees its claim.
func (s *Store) ClaimDelivery(ctx context.Context, mailbox, mode, node string) error {
	if mode == "" {
		return fmt.Errorf("pgstore: %w: empty delivery mode", um.ErrInvalid)
	}
	return s.inTx(ctx, func(tx pgx.Tx) error {
		mid, err := s.mailboxID(ctx, tx, mailbox)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT 1 FROM um_mailboxes WHERE id = $1 FOR UPDATE", mid); err != nil {
			return fmt.Errorf("pgstore: claim delivery of %q: %w", mailbox, err)
		}
		held, nodes, err := deliveryMode(ctx, tx, mid)
		if err != nil {
			return fmt.Errorf("pgstore: claim delivery of %q: %w", mailbox, err)
		}
		if held != "" && held != mode {
			return &um.ModeConflictError{Mailbox: mailbox, Mode: mode, Held: held, Nodes: nodes}
		}
		if _, err := tx.Exec(ctx, "INSERT INTO um_delivery (mailbox_id, node, mode) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", mid, node, mode); err != nil {
			return fmt.Errorf("pgstore: claim delivery of %q: %w", mailbox, err)
		}
		return nil
	})
}

// ReleaseDelivery implements um.DeliveryModes.
func (s *Store) ReleaseDelivery(ctx context.Context, mailbox, mode, node string) error {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, "DELETE FROM um_delivery WHERE mailbox_id = $1 AND node = $2 AND mode = $3", mid, node, mode); err != nil {
		return s.mapErr(fmt.Errorf("pgstore: release delivery of %q: %w", mailbox, err))
	}
	return nil
}

// DeliveryMode implements um.DeliveryModes.
func (s *Store) DeliveryMode(ctx context.Context, mailbox string) (string, []string, error) {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return "", nil, err
	}
	mode, nodes, err := deliveryMode(ctx, s.pool, mid)
	if err != nil {
		return "", nil, s.mapErr(fmt.Errorf("pgstore: delivery mode of %q: %w", mailbox, err))
	}
	return mode, nodes, nil
}

func deliveryMode(ctx context.Context, q queryer, mid int64) (mode string, nodes []string, err error) {
	rows, err := q.Query(ctx, "SELECT mode, node FROM um_delivery WHERE mailbox_id = $1 ORDER BY node", mid)
	if err != nil {
		return "", nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var node string
		if err := rows.Scan(&mode, &node); err != nil {
			return "", nil, err
		}
		nodes = append(nodes, node)
	}
	return mode, nodes, rows.Err()
}
