package um

import (
	"context"
	"fmt"

	"github.com/google/uuid"
)

// SetFlagsIfUnchanged applies op to the messages of ids whose ModSeq is at
// most since, as IMAP STORE UNCHANGEDSINCE does, and returns those that
// changed and, in the order of ids, those it left alone because they were
// changed after since. On a store that implements ConditionalFlagger the
// check and the change are atomic across the nodes of a cluster too.
func (mb *Mailbox) SetFlagsIfUnchanged(ctx context.Context, ids []uuid.UUID, op FlagOp, since uint64) (changed []Message, modified []uuid.UUID, err error) {
	if len(ids) == 0 {
		return nil, nil, nil
	}
	defer mb.svc.lock(mb.name)()
	if cf := mb.svc.caps.condFlags; cf != nil {
		changed, modified, err = cf.SetFlagsIfUnchanged(ctx, mb.name, ids, op, since)
	} else {
		changed, modified, err = mb.setFlagsIfUnchangedLocked(ctx, ids, op, since)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("um: set flags in %q: %w", mb.name, err)
	}
	events := make([]Event, len(changed))
	for i, m := range changed {
		events[i] = Event{Kind: EventFlags, Folder: m.Folder, Message: m.Clone()}
	}
	mb.svc.commit(ctx, mb.name, events)
	return changed, modified, nil
}

// setFlagsIfUnchangedLocked checks and stores under the mailbox lock of
// this node.
func (mb *Mailbox) setFlagsIfUnchangedLocked(ctx context.Context, ids []uuid.UUID, op FlagOp, since uint64) ([]Message, []uuid.UUID, error) {
	msgs, err := mb.getAllLocked(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	var keep, modified []uuid.UUID
	for _, m := range msgs {
		if m.ModSeq > since {
			modified = append(modified, m.ID)
		} else {
			keep = append(keep, m.ID)
		}
	}
	if len(keep) == 0 {
		return nil, modified, nil
	}
	changed, err := mb.svc.store.SetFlags(ctx, mb.name, keep, op)
	return changed, modified, err
}
