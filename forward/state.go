package forward

import (
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

// maxSent bounds the IDs of forwarded voicemail a state file remembers.
// They only guard against forwarding again a message that left INBOX and
// came back while no Forwarder watched, so the recent ones suffice.
const maxSent = 1000

// state is what a Forwarder remembers of one mailbox across restarts.
type state struct {
	// UIDValidity is INBOX's when UID was recorded.
	UIDValidity uint32 `json:"uidValidity"`
	// UID is the watermark: every INBOX message up to it was handled
	// (forwarded, given up, or found not to be a deposit of this node).
	UID um.UID `json:"uid"`
	// Sent holds the IDs of the last forwarded messages, oldest first.
	Sent []uuid.UUID `json:"sent,omitempty"`
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

// loadState returns the saved state of mailbox; ok is false when there is
// none (or no StateDir).
func (f *Forwarder) loadState(mailbox string) (st state, ok bool, err error) {
	if f.opts.StateDir == "" {
		return state{}, false, nil
	}
	b, err := os.ReadFile(f.statePath(mailbox))
	if errors.Is(err, os.ErrNotExist) {
		return state{}, false, nil
	}
	if err != nil {
		return state{}, false, fmt.Errorf("forward: state of %q: %w", mailbox, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return state{}, false, fmt.Errorf("forward: state of %q: %w", mailbox, err)
	}
	return st, true, nil
}

// saveState replaces the state file of mailbox atomically: write a
// temporary file, fsync it, rename it over the old one and fsync the
// directory, so a crash or power loss leaves the old or the new state.
func (f *Forwarder) saveState(mailbox string, st *state) error {
	if f.opts.StateDir == "" {
		return nil
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("forward: save state of %q: %w", mailbox, err)
	}
	if err := atomicfile.Write(f.statePath(mailbox), b); err != nil {
		return fmt.Errorf("forward: save state of %q: %w", mailbox, err)
	}
	return nil
}

// removeState forgets mailbox: forwarding it again starts afresh.
func (f *Forwarder) removeState(mailbox string) error {
	if f.opts.StateDir == "" {
		return nil
	}
	if err := os.Remove(f.statePath(mailbox)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("forward: remove state of %q: %w", mailbox, err)
	}
	return nil
}
