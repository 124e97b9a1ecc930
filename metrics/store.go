package metrics

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// WrapStore returns a um.Store that times every operation of store in
// um_store_operation_duration_seconds. Give the wrapper to um.New in place
// of store. It implements none of um's optional Store interfaces itself:
// its Unwrap returns store, and um follows Unwrap to find them (a change
// feed, Counter, Expunger), whose calls are then not timed.
func (m *Metrics) WrapStore(store um.Store) *Store {
	return &Store{inner: store, ops: m.storeOps}
}

// Store is a um.Store that times the operations of the store it wraps.
// See Metrics.WrapStore.
type Store struct {
	inner um.Store
	ops   *prometheus.HistogramVec
}

var _ um.Store = (*Store)(nil)

// Unwrap returns the wrapped store.
func (s *Store) Unwrap() um.Store { return s.inner }

// observe records one operation that started at start and ended with err.
func (s *Store) observe(op string, start time.Time, err error) {
	result := "ok"
	switch {
	case err == nil:
	case errors.Is(err, um.ErrNotFound):
		result = "not_found"
	default:
		result = "error"
	}
	s.ops.WithLabelValues(op, result).Observe(time.Since(start).Seconds())
}

// CreateMailbox is the wrapped store's, timed.
func (s *Store) CreateMailbox(ctx context.Context, mailbox string) error {
	start := time.Now()
	err := s.inner.CreateMailbox(ctx, mailbox)
	s.observe("create_mailbox", start, err)
	return err
}

// Mailboxes is the wrapped store's, timed.
func (s *Store) Mailboxes(ctx context.Context) ([]string, error) {
	start := time.Now()
	names, err := s.inner.Mailboxes(ctx)
	s.observe("mailboxes", start, err)
	return names, err
}

// Folders is the wrapped store's, timed.
func (s *Store) Folders(ctx context.Context, mailbox string) ([]um.Folder, error) {
	start := time.Now()
	fs, err := s.inner.Folders(ctx, mailbox)
	s.observe("folders", start, err)
	return fs, err
}

// CreateFolder is the wrapped store's, timed.
func (s *Store) CreateFolder(ctx context.Context, mailbox, folder string) (um.Folder, error) {
	start := time.Now()
	f, err := s.inner.CreateFolder(ctx, mailbox, folder)
	s.observe("create_folder", start, err)
	return f, err
}

// RenameFolder is the wrapped store's, timed.
func (s *Store) RenameFolder(ctx context.Context, mailbox, from, to string) error {
	start := time.Now()
	err := s.inner.RenameFolder(ctx, mailbox, from, to)
	s.observe("rename_folder", start, err)
	return err
}

// DeleteFolder is the wrapped store's, timed.
func (s *Store) DeleteFolder(ctx context.Context, mailbox, folder string) error {
	start := time.Now()
	err := s.inner.DeleteFolder(ctx, mailbox, folder)
	s.observe("delete_folder", start, err)
	return err
}

// Append is the wrapped store's, timed (reading the content included).
func (s *Store) Append(ctx context.Context, mailbox string, msg um.Message, r io.Reader) (um.Message, error) {
	start := time.Now()
	stored, err := s.inner.Append(ctx, mailbox, msg, r)
	s.observe("append", start, err)
	return stored, err
}

// List is the wrapped store's, timed.
func (s *Store) List(ctx context.Context, mailbox, folder string) ([]um.Message, error) {
	start := time.Now()
	msgs, err := s.inner.List(ctx, mailbox, folder)
	s.observe("list", start, err)
	return msgs, err
}

// Get is the wrapped store's, timed.
func (s *Store) Get(ctx context.Context, mailbox string, id uuid.UUID) (um.Message, error) {
	start := time.Now()
	msg, err := s.inner.Get(ctx, mailbox, id)
	s.observe("get", start, err)
	return msg, err
}

// Open is the wrapped store's, timed until the content is ready to read.
func (s *Store) Open(ctx context.Context, mailbox string, id uuid.UUID) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := s.inner.Open(ctx, mailbox, id)
	s.observe("open", start, err)
	return rc, err
}

// SetFlags is the wrapped store's, timed.
func (s *Store) SetFlags(ctx context.Context, mailbox string, ids []uuid.UUID, op um.FlagOp) ([]um.Message, error) {
	start := time.Now()
	changed, err := s.inner.SetFlags(ctx, mailbox, ids, op)
	s.observe("set_flags", start, err)
	return changed, err
}

// Move is the wrapped store's, timed.
func (s *Store) Move(ctx context.Context, mailbox string, ids []uuid.UUID, to string, now um.Time) ([]um.Message, error) {
	start := time.Now()
	moved, err := s.inner.Move(ctx, mailbox, ids, to, now)
	s.observe("move", start, err)
	return moved, err
}

// Copy is the wrapped store's, timed.
func (s *Store) Copy(ctx context.Context, mailbox string, ids []uuid.UUID, to string, newIDs []uuid.UUID, now um.Time) ([]um.Message, error) {
	start := time.Now()
	copies, err := s.inner.Copy(ctx, mailbox, ids, to, newIDs, now)
	s.observe("copy", start, err)
	return copies, err
}

// Remove is the wrapped store's, timed.
func (s *Store) Remove(ctx context.Context, mailbox string, ids []uuid.UUID) error {
	start := time.Now()
	err := s.inner.Remove(ctx, mailbox, ids)
	s.observe("remove", start, err)
	return err
}

// Close closes the wrapped store.
func (s *Store) Close() error { return s.inner.Close() }
