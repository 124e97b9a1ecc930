package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/lease"
)

// Purpose is the purpose under which the engine keeps each mailbox's lease
// (um.Leaser) and its state (um.OutwardState) in the store.
const Purpose = "upstream"

// storeState is the StateStore of an engine whose store keeps outward
// state: each mailbox's State is one blob of the store, written fenced by
// the lease the worker holds, which rides in the context of the worker's
// calls (withHeld). A mailbox the store has no state of yet gets it from
// the StateStore the host passed to New, once.
type storeState struct {
	s    um.OutwardState
	from StateStore // may be nil
	log  *slog.Logger
}

var _ StateStore = (*storeState)(nil)

type heldKey struct{}

// withHeld returns ctx carrying the lease the worker runs under.
func withHeld(ctx context.Context, h *lease.Held) context.Context {
	return context.WithValue(ctx, heldKey{}, h)
}

func heldFrom(ctx context.Context) *lease.Held {
	h, _ := ctx.Value(heldKey{}).(*lease.Held)
	return h
}

// Load implements StateStore.
func (s *storeState) Load(ctx context.Context, mailbox string) (*State, error) {
	b, err := s.s.GetState(ctx, mailbox, Purpose)
	if err == nil {
		st, err := decodeState(b)
		if err != nil {
			return nil, fmt.Errorf("upstream: state of %q in the store: %w", mailbox, err)
		}
		return st, nil
	}
	if !errors.Is(err, um.ErrNotFound) {
		return nil, fmt.Errorf("upstream: state of %q: %w", mailbox, err)
	}
	if s.from == nil {
		return nil, fmt.Errorf("upstream: state of %q: %w", mailbox, err)
	}
	st, err := s.from.Load(ctx, mailbox)
	if err != nil {
		return nil, err // ErrNotFound included: a mailbox that starts afresh
	}
	if err := s.Save(ctx, mailbox, st); err != nil {
		return nil, err
	}
	if f, ok := s.from.(*FileState); ok {
		if err := f.retire(mailbox); err != nil {
			s.log.Warn("upstream: state moved into the store, its file left", "mailbox", mailbox, "err", err)
		}
	}
	s.log.Info("upstream: state moved into the store", "mailbox", mailbox, "messages", len(st.Messages))
	return st, nil
}

// Save implements StateStore. Without a lease in ctx it saves nothing.
func (s *storeState) Save(ctx context.Context, mailbox string, st *State) error {
	h := heldFrom(ctx)
	if h == nil {
		return fmt.Errorf("upstream: save state of %q: %w: not saved outside the mailbox's lease", mailbox, um.ErrLeaseHeld)
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("upstream: state of %q: %w", mailbox, err)
	}
	if err := s.s.PutState(ctx, h.Lease(), b); err != nil {
		return fmt.Errorf("upstream: save state of %q: %w", mailbox, err)
	}
	return nil
}
