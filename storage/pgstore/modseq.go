package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// highestModSeq computes a folder's HighestModSeq, for a folders table
// aliased f, from two index lookups; nothing is written to the folder's row
// on a change, so writers lock no more than they did before ModSeqs.
const highestModSeq = `GREATEST(f.modseq,
	(SELECT max(m.modseq) FROM um_messages m WHERE m.folder_id = f.id),
	(SELECT max(v.modseq) FROM um_vanished v WHERE v.folder_id = f.id))`

// nextModSeq takes the mailbox's next ModSeq. The mailbox's row stays
// locked until the transaction ends, so the ModSeqs of one mailbox become
// visible in the order they were handed out, on every node. Writers take it
// after every other lock they need, so it never closes a cycle of waits.
func nextModSeq(ctx context.Context, tx pgx.Tx, mid int64) (int64, error) {
	var ms int64
	if err := tx.QueryRow(ctx, "UPDATE um_mailboxes SET modseq = modseq + 1 WHERE id = $1 RETURNING modseq", mid).Scan(&ms); err != nil {
		return 0, fmt.Errorf("pgstore: next modseq: %w", err)
	}
	return ms, nil
}

// vanish takes the next ModSeq and records, under it, the removal of the
// messages ids from the folders they are in now. The caller holds their
// rows locked.
func (s *Store) vanish(ctx context.Context, tx pgx.Tx, mid int64, ids []uuid.UUID) (int64, error) {
	ms, err := nextModSeq(ctx, tx, mid)
	if err != nil {
		return 0, err
	}
	rows, err := tx.Query(ctx, `INSERT INTO um_vanished (folder_id, modseq, uid)
		SELECT folder_id, $3, uid FROM um_messages WHERE mailbox_id = $1 AND id = ANY($2)
		RETURNING folder_id, uid`, mid, ids, ms)
	if err != nil {
		return 0, fmt.Errorf("pgstore: record removals: %w", err)
	}
	type removal struct{ FolderID, UID int64 }
	removed, err := pgx.CollectRows(rows, pgx.RowToStructByPos[removal])
	if err != nil {
		return 0, fmt.Errorf("pgstore: record removals: %w", err)
	}
	for _, r := range removed {
		if err := s.pruneAt(ctx, tx, r.FolderID, r.UID); err != nil {
			return 0, err
		}
	}
	return ms, nil
}

// pruneEvery is how often (every so many removed UIDs) a folder forgets
// all but its last Options.VanishedKept removals.
const pruneEvery = 64

// pruneAt prunes the folder's removals when uid is a multiple of
// pruneEvery: a client that appends and expunges in a loop cannot grow the
// database without bound. In place of what it forgets it leaves a mark
// (UID 0) under the largest ModSeq forgotten, from which on Vanished
// answers exactly.
func (s *Store) pruneAt(ctx context.Context, tx pgx.Tx, fid, uid int64) error {
	if uid%pruneEvery != 0 {
		return nil
	}
	_, err := tx.Exec(ctx, `WITH cut AS (
			SELECT modseq FROM um_vanished WHERE folder_id = $1 ORDER BY modseq DESC, uid DESC OFFSET $2 LIMIT 1),
		gone AS (
			DELETE FROM um_vanished v USING cut WHERE v.folder_id = $1 AND v.modseq <= cut.modseq RETURNING v.modseq)
		INSERT INTO um_vanished (folder_id, modseq, uid)
			SELECT $1, max(modseq), 0 FROM gone HAVING count(*) > 0
			ON CONFLICT DO NOTHING`, fid, s.opts.VanishedKept)
	if err != nil {
		return fmt.Errorf("pgstore: forget old removals: %w", err)
	}
	return nil
}

// Vanished implements um.ModSeqer. A folder remembers its last
// Options.VanishedKept removals or more; exactSince is the largest ModSeq
// of those it forgot.
func (s *Store) Vanished(ctx context.Context, mailbox, folder string, since uint64) ([]um.UID, uint64, error) {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return nil, 0, err
	}
	var fid int64
	err = s.pool.QueryRow(ctx, "SELECT id FROM um_folders WHERE mailbox_id = $1 AND name = $2", mid, folder).Scan(&fid)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("pgstore: folder %q of %q: %w", folder, mailbox, um.ErrNotFound)
	}
	if err != nil {
		return nil, 0, s.mapErr(fmt.Errorf("pgstore: folder %q of %q: %w", folder, mailbox, err))
	}
	var forgot int64
	if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(modseq), 0) FROM um_vanished WHERE folder_id = $1 AND uid = 0", fid).Scan(&forgot); err != nil {
		return nil, 0, s.mapErr(fmt.Errorf("pgstore: vanished of %q of %q: %w", folder, mailbox, err))
	}
	rows, err := s.pool.Query(ctx, "SELECT uid FROM um_vanished WHERE folder_id = $1 AND modseq > $2 AND uid <> 0 ORDER BY uid", fid, int64(since))
	if err != nil {
		return nil, 0, s.mapErr(fmt.Errorf("pgstore: vanished of %q of %q: %w", folder, mailbox, err))
	}
	uids, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (um.UID, error) {
		var u int64
		err := r.Scan(&u)
		return um.UID(u), err
	})
	if err != nil {
		return nil, 0, s.mapErr(fmt.Errorf("pgstore: vanished of %q of %q: %w", folder, mailbox, err))
	}
	return uids, uint64(forgot), nil
}

// SubscribeFolder implements um.FolderSubscriber.
func (s *Store) SubscribeFolder(ctx context.Context, mailbox, folder string) error {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return err
	}
	// Nodes subscribing at once may pass the cap by a name or two.
	var n int
	err = s.pool.QueryRow(ctx, `WITH ins AS (
			INSERT INTO um_subscriptions (mailbox_id, name)
			SELECT $1, $2 WHERE (SELECT count(*) FROM um_subscriptions WHERE mailbox_id = $1) < $3
			ON CONFLICT DO NOTHING RETURNING 1)
		SELECT (SELECT count(*) FROM ins) + (SELECT count(*) FROM um_subscriptions WHERE mailbox_id = $1 AND name = $2)`,
		mid, folder, um.MaxSubscriptions).Scan(&n)
	if err != nil {
		return s.mapErr(fmt.Errorf("pgstore: subscribe %q in %q: %w", folder, mailbox, err))
	}
	if n == 0 {
		return fmt.Errorf("pgstore: subscribe %q in %q: %w: %d subscriptions already", folder, mailbox, um.ErrInvalid, um.MaxSubscriptions)
	}
	return nil
}

// UnsubscribeFolder implements um.FolderSubscriber.
func (s *Store) UnsubscribeFolder(ctx context.Context, mailbox, folder string) error {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, "DELETE FROM um_subscriptions WHERE mailbox_id = $1 AND name = $2", mid, folder)
	if err != nil {
		return s.mapErr(fmt.Errorf("pgstore: unsubscribe %q in %q: %w", folder, mailbox, err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("pgstore: subscription %q of %q: %w", folder, mailbox, um.ErrNotFound)
	}
	return nil
}

// SubscribedFolders implements um.FolderSubscriber.
func (s *Store) SubscribedFolders(ctx context.Context, mailbox string) ([]string, error) {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, "SELECT name FROM um_subscriptions WHERE mailbox_id = $1 ORDER BY name", mid)
	if err != nil {
		return nil, s.mapErr(fmt.Errorf("pgstore: subscriptions of %q: %w", mailbox, err))
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, s.mapErr(fmt.Errorf("pgstore: subscriptions of %q: %w", mailbox, err))
	}
	if names == nil {
		names = []string{}
	}
	return names, nil
}
