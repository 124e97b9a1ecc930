package pgstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// chunkSize is the size of the content rows. A message up to smallContent
// bytes is read in the query that finds it; a larger one streams a chunk per
// query.
const (
	chunkSize    = 256 << 10
	smallChunks  = 4
	smallContent = chunkSize * smallChunks
)

func isReserved(folder string) bool { return folder == um.Inbox || folder == um.Trash }

// CreateMailbox implements um.Store.
func (s *Store) CreateMailbox(ctx context.Context, mailbox string) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		var id int64
		err := tx.QueryRow(ctx, "INSERT INTO um_mailboxes (name) VALUES ($1) ON CONFLICT (name) DO NOTHING RETURNING id", mailbox).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("pgstore: mailbox %q: %w", mailbox, um.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("pgstore: create mailbox %q: %w", mailbox, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO um_folders (mailbox_id, name) VALUES ($1, $2), ($1, $3)", id, um.Inbox, um.Trash); err != nil {
			return fmt.Errorf("pgstore: create mailbox %q: %w", mailbox, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO um_subscriptions (mailbox_id, name) VALUES ($1, $2), ($1, $3)", id, um.Inbox, um.Trash); err != nil {
			return fmt.Errorf("pgstore: create mailbox %q: %w", mailbox, err)
		}
		return nil
	})
}

// Mailboxes implements um.Store.
func (s *Store) Mailboxes(ctx context.Context) ([]string, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, "SELECT name FROM um_mailboxes ORDER BY name")
	if err != nil {
		return nil, s.mapErr(fmt.Errorf("pgstore: mailboxes: %w", err))
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, s.mapErr(fmt.Errorf("pgstore: mailboxes: %w", err))
	}
	if names == nil {
		names = []string{}
	}
	return names, nil
}

// Folders implements um.Store.
func (s *Store) Folders(ctx context.Context, mailbox string) ([]um.Folder, error) {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, "SELECT f.name, f.uidvalidity, f.uidnext, "+highestModSeq+" FROM um_folders f WHERE f.mailbox_id = $1 ORDER BY f.name", mid)
	if err != nil {
		return nil, s.mapErr(fmt.Errorf("pgstore: folders of %q: %w", mailbox, err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (um.Folder, error) {
		var f um.Folder
		var validity, next, highest int64
		err := r.Scan(&f.Name, &validity, &next, &highest)
		f.UIDValidity, f.UIDNext, f.HighestModSeq = uint32(validity), um.UID(next), uint64(highest)
		return f, err
	})
	if err != nil {
		return nil, s.mapErr(fmt.Errorf("pgstore: folders of %q: %w", mailbox, err))
	}
	return out, nil
}

// CreateFolder implements um.Store.
func (s *Store) CreateFolder(ctx context.Context, mailbox, folder string) (um.Folder, error) {
	var f um.Folder
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		mid, err := s.mailboxID(ctx, tx, mailbox)
		if err != nil {
			return err
		}
		var validity, next int64
		err = tx.QueryRow(ctx, `INSERT INTO um_folders (mailbox_id, name) VALUES ($1, $2)
			ON CONFLICT (mailbox_id, name) DO NOTHING RETURNING uidvalidity, uidnext`, mid, folder).Scan(&validity, &next)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("pgstore: folder %q of %q: %w", folder, mailbox, um.ErrExists)
		}
		if err != nil {
			return fmt.Errorf("pgstore: create folder %q in %q: %w", folder, mailbox, err)
		}
		ms, err := nextModSeq(ctx, tx, mid)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE um_folders SET modseq = $3 WHERE mailbox_id = $1 AND name = $2", mid, folder, ms); err != nil {
			return fmt.Errorf("pgstore: create folder %q in %q: %w", folder, mailbox, err)
		}
		f = um.Folder{Name: folder, UIDValidity: uint32(validity), UIDNext: um.UID(next), HighestModSeq: uint64(ms)}
		return s.notify(ctx, tx, mailbox, []um.Event{{Kind: um.EventFolderCreated, Folder: folder}})
	})
	return f, err
}

// folderID returns the id of a folder, locking its row when lock is set
// (the lock that serializes UID assignment).
func folderID(ctx context.Context, tx pgx.Tx, mid int64, mailbox, folder string, lock bool) (int64, error) {
	q := "SELECT id FROM um_folders WHERE mailbox_id = $1 AND name = $2"
	if lock {
		q += " FOR UPDATE"
	}
	var id int64
	err := tx.QueryRow(ctx, q, mid, folder).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("pgstore: folder %q of %q: %w", folder, mailbox, um.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("pgstore: folder %q of %q: %w", folder, mailbox, err)
	}
	return id, nil
}

// RenameFolder implements um.Store.
func (s *Store) RenameFolder(ctx context.Context, mailbox, from, to string) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		mid, err := s.mailboxID(ctx, tx, mailbox)
		if err != nil {
			return err
		}
		fid, err := folderID(ctx, tx, mid, mailbox, from, true)
		if err != nil {
			return err
		}
		if isReserved(from) || isReserved(to) {
			return fmt.Errorf("pgstore: rename %q to %q: %w", from, to, um.ErrReserved)
		}
		if _, err := tx.Exec(ctx, "UPDATE um_folders SET name = $2 WHERE id = $1", fid, to); err != nil {
			return fmt.Errorf("pgstore: rename %q to %q in %q: %w", from, to, mailbox, s.mapErr(err))
		}
		return s.notify(ctx, tx, mailbox, []um.Event{{Kind: um.EventFolderRenamed, Folder: from, NewName: to}})
	})
}

// DeleteFolder implements um.Store.
func (s *Store) DeleteFolder(ctx context.Context, mailbox, folder string) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		mid, err := s.mailboxID(ctx, tx, mailbox)
		if err != nil {
			return err
		}
		fid, err := folderID(ctx, tx, mid, mailbox, folder, true)
		if err != nil {
			return err
		}
		if isReserved(folder) {
			return fmt.Errorf("pgstore: delete %q: %w", folder, um.ErrReserved)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM um_folders WHERE id = $1", fid); err != nil {
			return fmt.Errorf("pgstore: delete folder %q in %q: %w", folder, mailbox, err)
		}
		return s.notify(ctx, tx, mailbox, []um.Event{{Kind: um.EventFolderDeleted, Folder: folder}})
	})
}

// msgCols are the columns scanMessage reads, for a messages table aliased m.
const msgCols = `m.id, (SELECT f.name FROM um_folders f WHERE f.id = m.folder_id), m.uid, m.flags, m.keywords,
	m.urgent, m.caller_number, m.caller_name, m.recorded_ns, m.duration_ns, m.audio_type, m.transcript,
	m.size, m.added_ns, m.raw, m.modseq`

func scanMessage(r pgx.Row) (um.Message, error) {
	var m um.Message
	var uid, duration, modSeq int64
	var flags int32
	var recorded, added *int64
	err := r.Scan(&m.ID, &m.Folder, &uid, &flags, &m.Keywords, &m.Urgent, &m.CallerNumber, &m.CallerName,
		&recorded, &duration, &m.AudioType, &m.Transcript, &m.Size, &added, &m.Raw, &modSeq)
	if err != nil {
		return um.Message{}, err
	}
	m.UID, m.Flags, m.Duration, m.ModSeq = um.UID(uid), um.Flags(flags), time.Duration(duration), uint64(modSeq)
	m.Time, m.Added = fromNS(recorded), fromNS(added)
	if len(m.Keywords) == 0 {
		m.Keywords = nil
	}
	return m, nil
}

func collectMessages(rows pgx.Rows) ([]um.Message, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (um.Message, error) { return scanMessage(r) })
}

func toNS(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	ns := t.UnixNano()
	return &ns
}

func fromNS(ns *int64) time.Time {
	if ns == nil {
		return time.Time{}
	}
	return time.Unix(0, *ns).UTC()
}

func keywordsParam(kw []string) []string {
	if kw == nil {
		return []string{}
	}
	return kw
}

// Append implements um.Store. The content goes into the transaction chunk
// by chunk as it is read; the folder's row (the UID counter) is locked only
// after the last chunk, so a slow reader holds up no other append.
func (s *Store) Append(ctx context.Context, mailbox string, m um.Message, r io.Reader) (um.Message, error) {
	return s.appendWithin(ctx, mailbox, m, r, um.Limits{})
}

// appendWithin is Append that, unless lim is zero, admits the message by
// lim in its transaction (limits.go).
func (s *Store) appendWithin(ctx context.Context, mailbox string, m um.Message, r io.Reader, lim um.Limits) (um.Message, error) {
	if r == nil {
		return um.Message{}, fmt.Errorf("pgstore: %w: nil reader", um.ErrInvalid)
	}
	if err := s.check(ctx); err != nil {
		return um.Message{}, err
	}
	m = m.Clone()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		mid, err := s.mailboxID(ctx, tx, mailbox)
		if err != nil {
			return err
		}
		buf := make([]byte, chunkSize)
		var size int64
		for seq := 0; ; seq++ {
			n, rerr := io.ReadFull(r, buf)
			if n > 0 {
				if _, err := tx.Exec(ctx, "INSERT INTO um_content (mailbox_id, message_id, seq, data) VALUES ($1, $2, $3, $4)",
					mid, m.ID, seq, buf[:n]); err != nil {
					return fmt.Errorf("pgstore: store content: %w", s.mapErr(err))
				}
				size += int64(n)
			}
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				break
			}
			if rerr != nil {
				return fmt.Errorf("pgstore: read content: %w", rerr)
			}
		}
		fid, err := folderID(ctx, tx, mid, mailbox, m.Folder, false)
		if err != nil {
			return err
		}
		uid, err := allocUIDs(ctx, tx, fid, 1)
		if err != nil {
			return err
		}
		// The ModSeq comes from a counter the INSERT itself bumps, which
		// saves a round trip, unless limits must be counted under the
		// mailbox's row before the message is stored.
		var ms *int64
		if m.Folder != um.Trash && !lim.IsZero() {
			n, err := nextModSeq(ctx, tx, mid)
			if err != nil {
				return err
			}
			if err := admit(ctx, tx, mid, mailbox, lim, 1, m.Duration); err != nil {
				return err
			}
			ms = &n
		}
		m.UID, m.Size = um.UID(uid), size
		var stored int64
		err = tx.QueryRow(ctx, `WITH ms AS (
				UPDATE um_mailboxes SET modseq = modseq + 1 WHERE id = $1 AND $17::bigint IS NULL RETURNING modseq)
			INSERT INTO um_messages (mailbox_id, id, folder_id, uid, flags, keywords, urgent,
				caller_number, caller_name, recorded_ns, duration_ns, audio_type, transcript, size, added_ns, raw, modseq)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
				coalesce($17::bigint, (SELECT modseq FROM ms)))
			RETURNING modseq`,
			mid, m.ID, fid, uid, int32(m.Flags), keywordsParam(m.Keywords), m.Urgent,
			m.CallerNumber, m.CallerName, toNS(m.Time), int64(m.Duration), m.AudioType, m.Transcript, size, toNS(m.Added), m.Raw, ms).Scan(&stored)
		m.ModSeq = uint64(stored)
		if err != nil {
			return fmt.Errorf("pgstore: store message %s: %w", m.ID, s.mapErr(err))
		}
		return s.notify(ctx, tx, mailbox, []um.Event{{Kind: um.EventAdded, Folder: m.Folder, Message: m.Clone()}})
	})
	if err != nil {
		return um.Message{}, s.mapErr(err)
	}
	return m, nil
}

// List implements um.Store. The folder lookup and the listing go out in one
// round trip.
func (s *Store) List(ctx context.Context, mailbox, folder string) ([]um.Message, error) {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return nil, err
	}
	var b pgx.Batch
	var found bool
	var msgs []um.Message
	b.Queue("SELECT EXISTS (SELECT 1 FROM um_folders WHERE mailbox_id = $1 AND name = $2)", mid, folder).
		QueryRow(func(r pgx.Row) error { return r.Scan(&found) })
	b.Queue(`SELECT m.id, $2::text, m.uid, m.flags, m.keywords, m.urgent, m.caller_number, m.caller_name,
		m.recorded_ns, m.duration_ns, m.audio_type, m.transcript, m.size, m.added_ns, m.raw, m.modseq
		FROM um_messages m JOIN um_folders f ON f.id = m.folder_id
		WHERE f.mailbox_id = $1 AND f.name = $2 ORDER BY m.uid`, mid, folder).
		Query(func(rows pgx.Rows) error {
			var err error
			msgs, err = collectMessages(rows)
			return err
		})
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return nil, s.mapErr(fmt.Errorf("pgstore: list %q of %q: %w", folder, mailbox, err))
	}
	if !found {
		return nil, fmt.Errorf("pgstore: folder %q of %q: %w", folder, mailbox, um.ErrNotFound)
	}
	if msgs == nil {
		msgs = []um.Message{}
	}
	return msgs, nil
}

// Get implements um.Store.
func (s *Store) Get(ctx context.Context, mailbox string, id uuid.UUID) (um.Message, error) {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return um.Message{}, err
	}
	m, err := scanMessage(s.pool.QueryRow(ctx, "SELECT "+msgCols+" FROM um_messages m WHERE m.mailbox_id = $1 AND m.id = $2", mid, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return um.Message{}, fmt.Errorf("pgstore: message %s of %q: %w", id, mailbox, um.ErrNotFound)
	}
	if err != nil {
		return um.Message{}, s.mapErr(fmt.Errorf("pgstore: message %s of %q: %w", id, mailbox, err))
	}
	return m, nil
}

// Open implements um.Store. Content up to 1 MiB is read with the query that
// finds the message; larger content streams, one 256 KiB chunk per query,
// as the caller reads.
func (s *Store) Open(ctx context.Context, mailbox string, id uuid.UUID) (io.ReadCloser, error) {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT m.size, c.data FROM um_messages m
		LEFT JOIN um_content c ON c.mailbox_id = m.mailbox_id AND c.message_id = m.id AND c.seq < $3
		WHERE m.mailbox_id = $1 AND m.id = $2 ORDER BY c.seq`, mid, id, smallChunks)
	if err != nil {
		return nil, s.mapErr(fmt.Errorf("pgstore: open %s of %q: %w", id, mailbox, err))
	}
	cr := &contentReader{s: s, mid: mid, id: id, size: -1}
	var head []byte
	for rows.Next() {
		var chunk []byte
		if err := rows.Scan(&cr.size, &chunk); err != nil {
			rows.Close()
			return nil, s.mapErr(fmt.Errorf("pgstore: open %s of %q: %w", id, mailbox, err))
		}
		head = append(head, chunk...)
		if chunk != nil {
			cr.next++
		}
	}
	if err := rows.Err(); err != nil {
		return nil, s.mapErr(fmt.Errorf("pgstore: open %s of %q: %w", id, mailbox, err))
	}
	if cr.size < 0 {
		return nil, fmt.Errorf("pgstore: message %s of %q: %w", id, mailbox, um.ErrNotFound)
	}
	cr.buf, cr.read = head, int64(len(head))
	return cr, nil
}

// contentReader streams a message's content chunk by chunk. A message
// removed while it is read ends the stream with an error, never with short
// content passed off as whole.
type contentReader struct {
	s    *Store
	mid  int64
	id   uuid.UUID
	size int64 // as recorded with the message
	next int   // seq of the next chunk to fetch
	read int64 // bytes fetched so far
	buf  []byte
}

func (c *contentReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		if c.read >= c.size {
			return 0, io.EOF
		}
		if err := c.s.check(context.Background()); err != nil {
			return 0, err
		}
		var chunk []byte
		err := c.s.pool.QueryRow(context.Background(), "SELECT data FROM um_content WHERE mailbox_id = $1 AND message_id = $2 AND seq = $3",
			c.mid, c.id, c.next).Scan(&chunk)
		if errors.Is(err, pgx.ErrNoRows) {
			return 0, fmt.Errorf("pgstore: content of %s ended at %d of %d bytes: %w", c.id, c.read, c.size, um.ErrNotFound)
		}
		if err != nil {
			return 0, fmt.Errorf("pgstore: read content of %s: %w", c.id, c.s.mapErr(err))
		}
		c.next++
		c.read += int64(len(chunk))
		c.buf = chunk
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

func (c *contentReader) Close() error {
	c.buf = nil
	c.read = c.size
	return nil
}

// lockMessages locks the rows of ids (FOR UPDATE, or FOR SHARE when share
// is set) and returns them in the order of ids. A missing id fails with
// ErrNotFound, a repeated one with ErrInvalid.
func lockMessages(ctx context.Context, tx pgx.Tx, mid int64, mailbox string, ids []uuid.UUID, share bool) ([]um.Message, error) {
	seen := make(map[uuid.UUID]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			return nil, fmt.Errorf("pgstore: %w: message %s named twice", um.ErrInvalid, id)
		}
		seen[id] = true
	}
	lock := " FOR UPDATE OF m"
	if share {
		lock = " FOR SHARE OF m"
	}
	rows, err := tx.Query(ctx, "SELECT "+msgCols+" FROM um_messages m WHERE m.mailbox_id = $1 AND m.id = ANY($2) ORDER BY m.id"+lock, mid, ids)
	if err != nil {
		return nil, fmt.Errorf("pgstore: messages of %q: %w", mailbox, err)
	}
	got, err := collectMessages(rows)
	if err != nil {
		return nil, fmt.Errorf("pgstore: messages of %q: %w", mailbox, err)
	}
	return inOrder(got, ids, mailbox)
}

// inOrder returns msgs in the order of ids, or ErrNotFound for the first id
// missing from msgs.
func inOrder(msgs []um.Message, ids []uuid.UUID, mailbox string) ([]um.Message, error) {
	byID := make(map[uuid.UUID]um.Message, len(msgs))
	for _, m := range msgs {
		byID[m.ID] = m
	}
	out := make([]um.Message, len(ids))
	for i, id := range ids {
		m, ok := byID[id]
		if !ok {
			return nil, fmt.Errorf("pgstore: message %s of %q: %w", id, mailbox, um.ErrNotFound)
		}
		out[i] = m
	}
	return out, nil
}

// setFlagsSQL applies a FlagOp in one statement per mode: the new flags and
// keywords are computed from the row as it is when the update locks it, so
// two nodes changing one message at once never lose either change. Only
// rows that change are updated and returned, marked with ModSeq -1 until
// SetFlags gives them theirs in the same transaction. $3 is the flags of
// the op, $4 its keywords.
var setFlagsSQL = map[um.FlagMode]string{
	um.FlagsAdd:     setFlagsStmt("m.flags | $3::integer", "um_keywords(m.keywords || $4::text[])"),
	um.FlagsRemove:  setFlagsStmt("m.flags & ~$3::integer", "um_keywords_without(m.keywords, $4::text[])"),
	um.FlagsReplace: setFlagsStmt("$3::integer", "um_keywords($4::text[])"),
}

func setFlagsStmt(flags, keywords string) string {
	return "UPDATE um_messages m SET flags = " + flags + ", keywords = " + keywords + `, modseq = -1
		WHERE m.mailbox_id = $1 AND m.id = ANY($2)
		AND (m.flags <> (` + flags + `) OR lower(m.keywords::text) <> lower((` + keywords + `)::text))
		RETURNING ` + msgCols
}

// SetFlags implements um.Store.
func (s *Store) SetFlags(ctx context.Context, mailbox string, ids []uuid.UUID, op um.FlagOp) ([]um.Message, error) {
	changed, _, err := s.setFlags(ctx, mailbox, ids, op, nil)
	return changed, err
}

// SetFlagsIfUnchanged implements um.ConditionalFlagger. It locks the rows
// first, so the ModSeqs it checks are those it changes.
func (s *Store) SetFlagsIfUnchanged(ctx context.Context, mailbox string, ids []uuid.UUID, op um.FlagOp, since uint64) ([]um.Message, []uuid.UUID, error) {
	return s.setFlags(ctx, mailbox, ids, op, &since)
}

func (s *Store) setFlags(ctx context.Context, mailbox string, all []uuid.UUID, op um.FlagOp, since *uint64) ([]um.Message, []uuid.UUID, error) {
	q, ok := setFlagsSQL[op.Mode]
	if !ok {
		return nil, nil, fmt.Errorf("pgstore: %w: flag mode %d", um.ErrInvalid, op.Mode)
	}
	var changed []um.Message
	var modified []uuid.UUID
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		changed, modified = nil, nil
		ids := all
		mid, err := s.mailboxID(ctx, tx, mailbox)
		if err != nil {
			return err
		}
		if since != nil {
			locked, err := lockMessages(ctx, tx, mid, mailbox, uniq(ids), false)
			if err != nil {
				return err
			}
			after := make(map[uuid.UUID]bool)
			for _, m := range locked {
				if m.ModSeq > *since {
					after[m.ID] = true
				}
			}
			ids = nil
			for _, id := range all {
				if after[id] {
					modified = append(modified, id)
				} else {
					ids = append(ids, id)
				}
			}
			if len(ids) == 0 {
				return nil
			}
		}
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM um_messages WHERE mailbox_id = $1 AND id = ANY($2)", mid, ids).Scan(&n); err != nil {
			return fmt.Errorf("pgstore: set flags in %q: %w", mailbox, err)
		}
		if n != len(uniq(ids)) {
			if _, err := lockMessages(ctx, tx, mid, mailbox, uniq(ids), true); err != nil {
				return err
			}
			return fmt.Errorf("pgstore: set flags in %q: %w: a message vanished", mailbox, um.ErrNotFound)
		}
		// One round trip: the flag update marks the rows it changed with
		// ModSeq -1, and the next statement takes the mailbox's next
		// ModSeq (after the rows' locks, as every writer takes it: last),
		// when there are any, and gives it to them.
		var got []um.Message
		var ms int64
		var b pgx.Batch
		b.Queue(q, mid, ids, int32(op.Flags), keywordsParam(op.Keywords)).Query(func(rows pgx.Rows) error {
			var err error
			got, err = collectMessages(rows)
			return err
		})
		b.Queue(`WITH ms AS (
				UPDATE um_mailboxes SET modseq = modseq + 1 WHERE id = $1
				AND EXISTS (SELECT 1 FROM um_messages WHERE mailbox_id = $1 AND id = ANY($2) AND modseq = -1)
				RETURNING modseq),
			marked AS (
				UPDATE um_messages m SET modseq = ms.modseq FROM ms
				WHERE m.mailbox_id = $1 AND m.id = ANY($2) AND m.modseq = -1)
			SELECT coalesce((SELECT modseq FROM ms), 0)`, mid, ids).QueryRow(func(r pgx.Row) error { return r.Scan(&ms) })
		if err := tx.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("pgstore: set flags in %q: %w", mailbox, err)
		}
		for i := range got {
			got[i].ModSeq = uint64(ms)
		}
		pos := make(map[uuid.UUID]int, len(ids))
		for i := len(ids) - 1; i >= 0; i-- {
			pos[ids[i]] = i
		}
		byPos := make(map[int]um.Message, len(got))
		for _, m := range got {
			byPos[pos[m.ID]] = m
		}
		events := make([]um.Event, 0, len(got))
		for i := range ids {
			if m, ok := byPos[i]; ok {
				changed = append(changed, m)
				events = append(events, um.Event{Kind: um.EventFlags, Folder: m.Folder, Message: m.Clone()})
			}
		}
		return s.notify(ctx, tx, mailbox, events)
	})
	if err != nil {
		return nil, nil, err
	}
	return changed, modified, nil
}

func uniq(ids []uuid.UUID) []uuid.UUID {
	seen := make(map[uuid.UUID]bool, len(ids))
	out := make([]uuid.UUID, 0, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// allocUIDs reserves n UIDs in the folder, whose row the transaction then
// holds locked until it ends: UIDs become visible in the order they were
// handed out, even when two nodes append at once.
func allocUIDs(ctx context.Context, tx pgx.Tx, fid int64, n int) (int64, error) {
	var first int64
	err := tx.QueryRow(ctx, "UPDATE um_folders SET uidnext = uidnext + $2 WHERE id = $1 RETURNING uidnext - $2", fid, n).Scan(&first)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("pgstore: folder deleted meanwhile: %w", um.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("pgstore: next UID: %w", err)
	}
	return first, nil
}

// transfer is what a move and a copy both hold before they write: the
// mailbox's and the target folder's rows, the messages locked in the order
// of the IDs asked for, and the target UID of each, in that order.
type transfer struct {
	mid, fid int64
	msgs     []um.Message
	uids     []int64
}

// beginTransfer finds mailbox and its folder to, locks the messages ids
// (shared when share: a copy leaves them where they are) and reserves
// their UIDs in to, whose row then stays locked until tx ends (allocUIDs).
func (s *Store) beginTransfer(ctx context.Context, tx pgx.Tx, mailbox string, ids []uuid.UUID, to string, share bool) (transfer, error) {
	mid, err := s.mailboxID(ctx, tx, mailbox)
	if err != nil {
		return transfer{}, err
	}
	fid, err := folderID(ctx, tx, mid, mailbox, to, false)
	if err != nil {
		return transfer{}, err
	}
	msgs, err := lockMessages(ctx, tx, mid, mailbox, ids, share)
	if err != nil {
		return transfer{}, err
	}
	first, err := allocUIDs(ctx, tx, fid, len(ids))
	if err != nil {
		return transfer{}, err
	}
	uids := make([]int64, len(ids))
	for i := range uids {
		uids[i] = first + int64(i)
	}
	return transfer{mid: mid, fid: fid, msgs: msgs, uids: uids}, nil
}

// Move implements um.Store.
func (s *Store) Move(ctx context.Context, mailbox string, ids []uuid.UUID, to string, now time.Time) ([]um.Message, error) {
	return s.moveWithin(ctx, mailbox, ids, to, now, um.Limits{})
}

// moveWithin is Move that, unless lim is zero, admits by lim the messages
// it takes out of Trash into another folder.
func (s *Store) moveWithin(ctx context.Context, mailbox string, ids []uuid.UUID, to string, now time.Time, lim um.Limits) ([]um.Message, error) {
	var out []um.Message
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tr, err := s.beginTransfer(ctx, tx, mailbox, ids, to, false)
		if err != nil {
			return err
		}
		mid, fid, before, uids := tr.mid, tr.fid, tr.msgs, tr.uids
		ms, err := s.vanish(ctx, tx, mid, ids)
		if err != nil {
			return err
		}
		if to != um.Trash {
			n, d := 0, time.Duration(0)
			for _, m := range before {
				if m.Folder == um.Trash {
					n, d = n+1, d+m.Duration
				}
			}
			if err := admit(ctx, tx, mid, mailbox, lim, n, d); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, `UPDATE um_messages m SET folder_id = $3, uid = v.uid, added_ns = COALESCE($5, m.added_ns), modseq = $6
			FROM unnest($2::uuid[], $4::bigint[]) AS v(id, uid)
			WHERE m.mailbox_id = $1 AND m.id = v.id RETURNING `+msgCols, mid, ids, fid, uids, toNS(now), ms)
		if err != nil {
			return fmt.Errorf("pgstore: move to %q in %q: %w", to, mailbox, err)
		}
		got, err := collectMessages(rows)
		if err != nil {
			return fmt.Errorf("pgstore: move to %q in %q: %w", to, mailbox, err)
		}
		if out, err = inOrder(got, ids, mailbox); err != nil {
			return err
		}
		events := make([]um.Event, 0, 2*len(out))
		for i, m := range out {
			b := before[i]
			events = append(events,
				um.Event{Kind: um.EventRemoved, Folder: b.Folder, Message: um.Message{ID: b.ID, UID: b.UID, Folder: b.Folder}},
				um.Event{Kind: um.EventAdded, Folder: m.Folder, Message: m.Clone()})
		}
		return s.notify(ctx, tx, mailbox, events)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Copy implements um.Store. The content is copied inside the database.
func (s *Store) Copy(ctx context.Context, mailbox string, ids []uuid.UUID, to string, newIDs []uuid.UUID, now time.Time) ([]um.Message, error) {
	return s.copyWithin(ctx, mailbox, ids, to, newIDs, now, um.Limits{})
}

// copyWithin is Copy that, unless lim is zero, admits by lim every copy it
// adds outside Trash, together.
func (s *Store) copyWithin(ctx context.Context, mailbox string, ids []uuid.UUID, to string, newIDs []uuid.UUID, now time.Time, lim um.Limits) ([]um.Message, error) {
	if len(newIDs) != len(ids) {
		return nil, fmt.Errorf("pgstore: %w: %d ids, %d new ids", um.ErrInvalid, len(ids), len(newIDs))
	}
	var out []um.Message
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		tr, err := s.beginTransfer(ctx, tx, mailbox, ids, to, true)
		if err != nil {
			return err
		}
		mid, fid, originals, uids := tr.mid, tr.fid, tr.msgs, tr.uids
		ms, err := nextModSeq(ctx, tx, mid)
		if err != nil {
			return err
		}
		if to != um.Trash {
			var d time.Duration
			for _, m := range originals {
				d += m.Duration
			}
			if err := admit(ctx, tx, mid, mailbox, lim, len(originals), d); err != nil {
				return err
			}
		}
		rows, err := tx.Query(ctx, `INSERT INTO um_messages AS m (mailbox_id, id, folder_id, uid, flags, keywords, urgent,
				caller_number, caller_name, recorded_ns, duration_ns, audio_type, transcript, size, added_ns, raw, modseq)
			SELECT o.mailbox_id, v.new_id, $3, v.uid, o.flags, o.keywords, o.urgent, o.caller_number, o.caller_name,
				o.recorded_ns, o.duration_ns, o.audio_type, o.transcript, o.size, COALESCE($6, o.added_ns), o.raw, $7
			FROM um_messages o JOIN unnest($2::uuid[], $4::uuid[], $5::bigint[]) AS v(id, new_id, uid) ON o.id = v.id
			WHERE o.mailbox_id = $1
			RETURNING `+msgCols, mid, ids, fid, newIDs, uids, toNS(now), ms)
		if err != nil {
			return fmt.Errorf("pgstore: copy to %q in %q: %w", to, mailbox, s.mapErr(err))
		}
		got, err := collectMessages(rows)
		if err != nil {
			return fmt.Errorf("pgstore: copy to %q in %q: %w", to, mailbox, s.mapErr(err))
		}
		if out, err = inOrder(got, newIDs, mailbox); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO um_content (mailbox_id, message_id, seq, data)
			SELECT c.mailbox_id, v.new_id, c.seq, c.data
			FROM um_content c JOIN unnest($2::uuid[], $3::uuid[]) AS v(id, new_id) ON c.message_id = v.id
			WHERE c.mailbox_id = $1`, mid, ids, newIDs); err != nil {
			return fmt.Errorf("pgstore: copy content to %q in %q: %w", to, mailbox, err)
		}
		events := make([]um.Event, len(out))
		for i, m := range out {
			events[i] = um.Event{Kind: um.EventAdded, Folder: m.Folder, Message: m.Clone()}
		}
		return s.notify(ctx, tx, mailbox, events)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Remove implements um.Store.
func (s *Store) Remove(ctx context.Context, mailbox string, ids []uuid.UUID) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		mid, err := s.mailboxID(ctx, tx, mailbox)
		if err != nil {
			return err
		}
		before, err := lockMessages(ctx, tx, mid, mailbox, uniq(ids), false)
		if err != nil {
			return err
		}
		if _, err := s.vanish(ctx, tx, mid, ids); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM um_messages WHERE mailbox_id = $1 AND id = ANY($2)", mid, ids); err != nil {
			return fmt.Errorf("pgstore: remove from %q: %w", mailbox, err)
		}
		return s.notifyRemoved(ctx, tx, mailbox, before)
	})
}

// notifyRemoved announces removed messages to the other nodes, in the
// transaction that removes them. Their content rows go with them: the
// foreign key of um_content cascades.
func (s *Store) notifyRemoved(ctx context.Context, tx pgx.Tx, mailbox string, removed []um.Message) error {
	events := make([]um.Event, len(removed))
	for i, b := range removed {
		events[i] = um.Event{Kind: um.EventRemoved, Folder: b.Folder, Message: um.Message{ID: b.ID, UID: b.UID, Folder: b.Folder}}
	}
	return s.notify(ctx, tx, mailbox, events)
}

// Expunge implements um.Expunger. The \Deleted check is part of the DELETE:
// a row another node is changing meanwhile is checked again once that change
// commits, so a \Deleted cleared, or a message moved away, by another node
// is kept.
func (s *Store) Expunge(ctx context.Context, mailbox, folder string, uids []um.UID) ([]um.Message, error) {
	var only []int64 // nil (SQL NULL) for every \Deleted message
	if uids != nil {
		only = make([]int64, len(uids))
		for i, u := range uids {
			only[i] = int64(u)
		}
	}
	var gone []um.Message
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		gone = nil
		mid, err := s.mailboxID(ctx, tx, mailbox)
		if err != nil {
			return err
		}
		fid, err := folderID(ctx, tx, mid, mailbox, folder, false)
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `DELETE FROM um_messages m
			WHERE m.mailbox_id = $1 AND m.folder_id = $2 AND m.flags & $3 <> 0
			AND ($4::bigint[] IS NULL OR m.uid = ANY($4::bigint[]))
			RETURNING `+msgCols, mid, fid, int32(um.FlagDeleted), only)
		if err != nil {
			return fmt.Errorf("pgstore: expunge %q of %q: %w", folder, mailbox, err)
		}
		if gone, err = collectMessages(rows); err != nil {
			return fmt.Errorf("pgstore: expunge %q of %q: %w", folder, mailbox, err)
		}
		if len(gone) == 0 {
			return nil
		}
		ms, err := nextModSeq(ctx, tx, mid)
		if err != nil {
			return err
		}
		gu := make([]int64, len(gone))
		for i, m := range gone {
			gu[i] = int64(m.UID)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO um_vanished (folder_id, modseq, uid) SELECT $1, $2, unnest($3::bigint[])", fid, ms, gu); err != nil {
			return fmt.Errorf("pgstore: expunge %q of %q: %w", folder, mailbox, err)
		}
		for _, u := range gu {
			if err := s.pruneAt(ctx, tx, fid, u); err != nil {
				return err
			}
		}
		return s.notifyRemoved(ctx, tx, mailbox, gone)
	})
	if err != nil || len(gone) == 0 {
		return nil, err
	}
	slices.SortFunc(gone, func(a, b um.Message) int { return cmp.Compare(a.UID, b.UID) })
	return gone, nil
}

// CountMWI implements um.Counter with one aggregate query.
func (s *Store) CountMWI(ctx context.Context, mailbox string) (um.MWIState, error) {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return um.MWIState{}, err
	}
	st := um.MWIState{Mailbox: mailbox}
	err = s.pool.QueryRow(ctx, `SELECT
			count(*) FILTER (WHERE m.flags & $3 = 0),
			count(*) FILTER (WHERE m.flags & $3 <> 0),
			count(*) FILTER (WHERE m.flags & $3 = 0 AND m.flags & $5 <> 0),
			count(*) FILTER (WHERE m.flags & $3 <> 0 AND m.flags & $5 <> 0)
		FROM um_messages m JOIN um_folders f ON f.id = m.folder_id
		WHERE f.mailbox_id = $1 AND f.name = $2 AND NOT m.raw AND m.flags & $4 = 0`,
		mid, um.Inbox, int32(um.FlagHeard), int32(um.FlagDeleted), int32(um.FlagFlagged)).Scan(&st.New, &st.Old, &st.UrgentNew, &st.UrgentOld)
	if err != nil {
		return um.MWIState{}, s.mapErr(fmt.Errorf("pgstore: mwi of %q: %w", mailbox, err))
	}
	return st, nil
}

// Usage implements um.Counter with one aggregate query.
func (s *Store) Usage(ctx context.Context, mailbox string) (um.Usage, error) {
	mid, err := s.poolMailboxID(ctx, mailbox)
	if err != nil {
		return um.Usage{}, err
	}
	u, err := usage(ctx, s.pool, mid)
	if err != nil {
		return um.Usage{}, s.mapErr(fmt.Errorf("pgstore: usage of %q: %w", mailbox, err))
	}
	return u, nil
}

// usage counts what mailbox mid holds outside Trash, in one aggregate
// query.
func usage(ctx context.Context, q queryer, mid int64) (um.Usage, error) {
	var u um.Usage
	var ns int64
	err := q.QueryRow(ctx, `SELECT count(*), coalesce(sum(m.duration_ns), 0), coalesce(sum(m.size), 0)
		FROM um_messages m JOIN um_folders f ON f.id = m.folder_id
		WHERE f.mailbox_id = $1 AND f.name <> $2`, mid, um.Trash).Scan(&u.Messages, &ns, &u.Size)
	u.Recorded = time.Duration(ns)
	return u, err
}
