package upstream

import (
	"context"
	"fmt"
	"time"

	"github.com/embeddedum/um"
)

// waitOwner returns the channel that is closed when this node's ownership
// of the mailbox ends, once it owns it. It fails with an error wrapping
// um.ErrLeaseHeld as soon as it learns that another node owns it; until the
// lease is settled (just after Add, or while it passes between nodes) it
// waits, within ctx.
func (w *worker) waitOwner(ctx context.Context) (<-chan struct{}, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		w.mu.Lock()
		owning := w.owning
		w.mu.Unlock()
		if owning != nil {
			return owning, nil
		}
		if holder, _, _ := w.keeper.Owner(); holder != "" && holder != w.e.svc.Node() {
			return nil, w.notOwner()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.done:
			return nil, fmt.Errorf("upstream: sync %q: %w", w.cfg.Mailbox, um.ErrClosed)
		}
	}
}

// notOwner is the error of a request that only the owner can answer.
func (w *worker) notOwner() error {
	holder, _, _ := w.keeper.Owner()
	if holder == "" {
		holder = "no node at the moment"
	}
	return fmt.Errorf("upstream: sync %q: %w: owned by %s", w.cfg.Mailbox, um.ErrLeaseHeld, holder)
}
