package forward

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/atomicfile"
	"github.com/google/uuid"
)

// Purpose is the purpose of the leases and of the state a Forwarder keeps
// in the store (um.Leaser, um.OutwardState).
const Purpose = "forward"

// maxSent bounds the IDs of forwarded voicemail a state remembers. They
// only guard against forwarding again a message that left INBOX and came
// back while no Forwarder watched, so the recent ones suffice.
const maxSent = 1000

// state is what a Forwarder remembers of one mailbox across restarts and,
// in the store, across the nodes of a cluster.
type state struct {
	// UIDValidity is INBOX's when UID was recorded.
	UIDValidity uint32 `json:"uidValidity"`
	// UID is the watermark: every INBOX message up to it was handled
	// (forwarded, given up, or found not to be a deposit to forward).
	UID um.UID `json:"uid"`
	// Sent holds the IDs of the last forwarded messages, oldest first.
	Sent []uuid.UUID `json:"sent,omitempty"`
	// Sending is the message whose end of data was about to be written to
	// the SMTP server when this state was saved: the server may have
	// accepted it without the sender learning so. It is cleared once the
	// server's answer is known.
	Sending *inflight `json:"sending,omitempty"`
}

// inflight names a message in doubt.
type inflight struct {
	ID  uuid.UUID `json:"id"`
	UID um.UID    `json:"uid"`
}

func (st *state) sent(id uuid.UUID) bool {
	for _, s := range st.Sent {
		if s == id {
			return true
		}
	}
	return false
}

func (st *state) addSent(id uuid.UUID) {
	st.Sent = append(st.Sent, id)
	if n := len(st.Sent) - maxSent; n > 0 {
		st.Sent = append(st.Sent[:0], st.Sent[n:]...)
	}
}

func (f *Forwarder) statePath(mailbox string) string {
	// PathEscape keeps "/" and ".." out of file names.
	return filepath.Join(f.opts.StateDir, url.PathEscape(mailbox)+".json")
}

// loadState returns the saved state of b's mailbox; ok is false when there
// is none. With the store's um.OutwardState it reads the store and, the
// first time, migrates a state file from Options.StateDir into it (fenced
// by l) and removes the file.
func (f *Forwarder) loadState(ctx context.Context, b *box, l um.Lease) (st state, ok bool, err error) {
	if f.outward == nil {
		return f.loadFile(b.cfg.Mailbox)
	}
	data, err := f.outward.GetState(ctx, b.cfg.Mailbox, Purpose)
	if err == nil {
		if err := json.Unmarshal(data, &st); err != nil {
			return state{}, false, fmt.Errorf("forward: state of %q in the store: %w", b.cfg.Mailbox, err)
		}
		return st, true, nil
	}
	if !errors.Is(err, um.ErrNotFound) {
		return state{}, false, fmt.Errorf("forward: state of %q: %w", b.cfg.Mailbox, err)
	}
	st, ok, err = f.loadFile(b.cfg.Mailbox)
	if err != nil || !ok {
		return st, ok, err
	}
	if err := f.putState(ctx, l, b.cfg.Mailbox, &st); err != nil {
		return state{}, false, err
	}
	if err := os.Remove(f.statePath(b.cfg.Mailbox)); err != nil {
		// The store's state is read first from now on; the file is only
		// left behind.
		f.opts.Logger.Warn("forward: remove migrated state file", "mailbox", b.cfg.Mailbox, "err", err)
	}
	f.opts.Logger.Info("forward: state file migrated into the store", "mailbox", b.cfg.Mailbox, "file", f.statePath(b.cfg.Mailbox))
	return st, true, nil
}

func (f *Forwarder) loadFile(mailbox string) (st state, ok bool, err error) {
	if f.opts.StateDir == "" {
		return state{}, false, nil
	}
	data, err := os.ReadFile(f.statePath(mailbox))
	if errors.Is(err, os.ErrNotExist) {
		return state{}, false, nil
	}
	if err != nil {
		return state{}, false, fmt.Errorf("forward: state of %q: %w", mailbox, err)
	}
	if err := json.Unmarshal(data, &st); err != nil {
		return state{}, false, fmt.Errorf("forward: state of %q: %w", mailbox, err)
	}
	return st, true, nil
}

// putState saves st: in the store, fenced by l (an error wrapping
// um.ErrLeaseHeld when l is no longer the current lease), or in a file
// replaced atomically (write, fsync, rename, directory fsync), so a crash
// or power loss leaves the old or the new state.
func (f *Forwarder) putState(ctx context.Context, l um.Lease, mailbox string, st *state) error {
	if f.outward == nil && f.opts.StateDir == "" {
		return nil
	}
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("forward: save state of %q: %w", mailbox, err)
	}
	if f.outward != nil {
		if err := f.outward.PutState(ctx, l, data); err != nil {
			return fmt.Errorf("forward: save state of %q: %w", mailbox, err)
		}
		return nil
	}
	if err := atomicfile.Write(f.statePath(mailbox), data); err != nil {
		return fmt.Errorf("forward: save state of %q: %w", mailbox, err)
	}
	return nil
}

// removeState forgets mailbox, in the store (fenced by l) and in
// Options.StateDir: forwarding it again starts afresh.
func (f *Forwarder) removeState(ctx context.Context, l um.Lease, mailbox string) error {
	if f.outward != nil {
		if err := f.outward.DeleteState(ctx, l); err != nil {
			return fmt.Errorf("forward: remove state of %q: %w", mailbox, err)
		}
	}
	if f.opts.StateDir == "" {
		return nil
	}
	if err := os.Remove(f.statePath(mailbox)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("forward: remove state of %q: %w", mailbox, err)
	}
	return nil
}
