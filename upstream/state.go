package upstream

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

// State is what a worker remembers about one mailbox between connections and
// restarts: which upstream UID holds which voicemail, and the flags both
// sides agreed on at the last sync. It holds no queue of operations: pending
// work is the difference between this state, the um store and the server,
// computed again at each (re)connect.
type State struct {
	// UIDValidity of the upstream folder the UIDs belong to.
	UIDValidity uint32 `json:"uidvalidity"`
	// HighestModSeq is the folder's CONDSTORE mod-sequence at the last
	// sync, zero when unknown or unsupported.
	HighestModSeq uint64 `json:"highestmodseq,omitempty"`
	// Messages maps um message IDs to their upstream copies.
	Messages map[uuid.UUID]MessageState `json:"messages"`
}

// MessageState is the association of one voicemail with its upstream copy.
type MessageState struct {
	// UID is the copy's UID under State.UIDValidity; zero when the message
	// has no known copy (not yet appended, or the UIDVALIDITY changed).
	UID uint32 `json:"uid,omitempty"`
	// Flags are the synced flags (\Seen, \Answered, \Flagged, \Deleted) as
	// both sides had them at the last sync: the base of the three-way merge.
	Flags um.Flags `json:"flags"`
	// Appending is set, and saved, before an APPEND whose outcome is not yet
	// known; the next attempt searches for the copy before appending again.
	Appending bool `json:"appending,omitempty"`
	// Removed is set once the voicemail was deleted on one side and its
	// copy removed on the other: the copy is never uploaded again as new.
	// When the phone undeletes it, the engine brings the copy back from the
	// server's Trash (or uploads it once when there is none). Removed
	// entries are dropped when the voicemail leaves the um store.
	Removed bool `json:"removed,omitempty"`
}

func (s *State) clone() *State {
	c := &State{UIDValidity: s.UIDValidity, HighestModSeq: s.HighestModSeq, Messages: make(map[uuid.UUID]MessageState, len(s.Messages))}
	for k, v := range s.Messages {
		c.Messages[k] = v
	}
	return c
}

// StateStore keeps each mailbox's State durably, for engines whose store
// does not (see New: a store with um.OutwardState and um.Leaser keeps the
// state itself, and a StateStore given then is only read from, to move its
// states into the store). A worker calls it from its own goroutine only,
// so calls for one mailbox never overlap; calls for different mailboxes
// may.
type StateStore interface {
	// Load returns the saved state of mailbox, or an error for which
	// errors.Is(err, um.ErrNotFound) is true when none was saved.
	Load(ctx context.Context, mailbox string) (*State, error)
	// Save replaces the saved state of mailbox atomically: after a crash,
	// Load returns either the old or the new state, never a mix.
	Save(ctx context.Context, mailbox string, st *State) error
}

// FileState is a StateStore that keeps one JSON file per mailbox in a
// directory. Save writes a temporary file, fsyncs it, renames it over the
// old one and fsyncs the directory, so a crash or power loss leaves the
// old or the new file. The files are on one node's disk: in a cluster,
// where another node must continue a mailbox's sync, the store keeps the
// state instead, and New moves each file there (renaming it
// NAME.json.migrated) the first time it is needed.
type FileState struct {
	dir string
}

var _ StateStore = (*FileState)(nil)

// NewFileState returns a FileState in dir, creating the directory.
func NewFileState(dir string) (*FileState, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("upstream: state directory: %w", err)
	}
	return &FileState{dir: dir}, nil
}

func (f *FileState) path(mailbox string) string {
	// PathEscape keeps "/" and ".." out of file names.
	return filepath.Join(f.dir, url.PathEscape(mailbox)+".json")
}

// Load implements StateStore.
func (f *FileState) Load(ctx context.Context, mailbox string) (*State, error) {
	b, err := os.ReadFile(f.path(mailbox))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("upstream: state of %q: %w", mailbox, um.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("upstream: state of %q: %w", mailbox, err)
	}
	st, err := decodeState(b)
	if err != nil {
		return nil, fmt.Errorf("upstream: state of %q: %w", mailbox, err)
	}
	return st, nil
}

// decodeState reads a State as FileState and the store keep it (JSON).
func decodeState(b []byte) (*State, error) {
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	if st.Messages == nil {
		st.Messages = make(map[uuid.UUID]MessageState)
	}
	return &st, nil
}

// retire renames the state file of mailbox once its state has moved into
// the store, so it is never read again (and is kept, for the record).
func (f *FileState) retire(mailbox string) error {
	p := f.path(mailbox)
	if err := os.Rename(p, p+".migrated"); err != nil {
		return fmt.Errorf("upstream: retire state file of %q: %w", mailbox, err)
	}
	return nil
}

// Save implements StateStore.
func (f *FileState) Save(ctx context.Context, mailbox string, st *State) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("upstream: state of %q: %w", mailbox, err)
	}
	if err := atomicfile.Write(f.path(mailbox), b); err != nil {
		return fmt.Errorf("upstream: save state of %q: %w", mailbox, err)
	}
	return nil
}
