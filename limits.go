package um

import (
	"context"
	"io"
	"time"

	"github.com/google/uuid"
)

// limits returns the Options limits.
func (s *Service) limits() Limits {
	return Limits{MaxMessages: s.opts.MaxMessages, MaxRecordedTime: s.opts.MaxRecordedTime}
}

// appendLocked stores m within the limits. A store that implements Limiter
// checks them in the transaction that stores m; for any other store they are
// checked first, under the mailbox lock of this node only.
func (mb *Mailbox) appendLocked(ctx context.Context, m Message, r io.Reader) (Message, error) {
	lim := mb.svc.limits()
	if l := mb.svc.caps.limiter; l != nil && !lim.IsZero() {
		return l.AppendLimited(ctx, mb.name, m, r, lim)
	}
	if m.Folder != Trash {
		if err := mb.checkRoomLocked(ctx, 1, m.Duration); err != nil {
			return Message{}, err
		}
	}
	return mb.svc.store.Append(ctx, mb.name, m, r)
}

// moveLocked moves the messages ids, which are before, within the limits:
// what a move takes out of Trash into another folder counts.
func (mb *Mailbox) moveLocked(ctx context.Context, before []Message, ids []uuid.UUID, folder string) ([]Message, error) {
	now := placedAt(mb.svc.opts.Now(), folder)
	lim := mb.svc.limits()
	if l := mb.svc.caps.limiter; l != nil && !lim.IsZero() {
		return l.MoveLimited(ctx, mb.name, ids, folder, now, lim)
	}
	if folder != Trash {
		n, d := 0, time.Duration(0)
		for _, m := range before {
			if m.Folder == Trash {
				n, d = n+1, d+m.Duration
			}
		}
		if err := mb.checkRoomLocked(ctx, n, d); err != nil {
			return nil, err
		}
	}
	return mb.svc.store.Move(ctx, mb.name, ids, folder, now)
}

// copyLocked copies the messages ids, which are before, into folder under
// new IDs within the limits: every copy outside Trash counts, together.
func (mb *Mailbox) copyLocked(ctx context.Context, before []Message, ids []uuid.UUID, folder string) ([]Message, error) {
	newIDs := make([]uuid.UUID, len(ids))
	for i := range newIDs {
		newIDs[i] = uuid.New()
	}
	now := placedAt(mb.svc.opts.Now(), folder)
	lim := mb.svc.limits()
	if l := mb.svc.caps.limiter; l != nil && !lim.IsZero() {
		return l.CopyLimited(ctx, mb.name, ids, folder, newIDs, now, lim)
	}
	if folder != Trash {
		var d time.Duration
		for _, m := range before {
			d += m.Duration
		}
		if err := mb.checkRoomLocked(ctx, len(before), d); err != nil {
			return nil, err
		}
	}
	return mb.svc.store.Copy(ctx, mb.name, ids, folder, newIDs, now)
}

// placedAt is the now a Move or Copy into folder passes the store: the
// time for Trash, whose retention counts from Added, and zero elsewhere, so
// messages keep their Added (IMAP INTERNALDATE) as RFC 3501 asks of COPY.
func placedAt(now time.Time, folder string) time.Time {
	if folder == Trash {
		return now.UTC()
	}
	return time.Time{}
}

// checkRoomLocked fails with ErrMailboxFull when n more messages of summed
// duration d would pass the limits. The check and the write that follows
// happen under the mailbox lock of this node; without a Limiter store, nodes
// of a cluster may pass a limit together by a few messages.
func (mb *Mailbox) checkRoomLocked(ctx context.Context, n int, d time.Duration) error {
	lim := mb.svc.limits()
	if lim.IsZero() || n <= 0 {
		return nil
	}
	u, err := mb.svc.usage(ctx, mb.name)
	if err != nil {
		return err
	}
	return lim.Admit(mb.name, u, n, d)
}
