// Package memstore is an in-memory um.Store for tests and examples. It keeps
// nothing across restarts; use the embedded default store or pgstore for
// real mailboxes.
package memstore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

var (
	_ um.Store              = (*Store)(nil)
	_ um.Expunger           = (*Store)(nil)
	_ um.ModSeqer           = (*Store)(nil)
	_ um.FolderSubscriber   = (*Store)(nil)
	_ um.ConditionalFlagger = (*Store)(nil)
)

// Store is an in-memory um.Store. The zero value is not usable; call New.
type Store struct {
	mu        sync.Mutex
	mailboxes map[string]*mailbox
	validity  uint32 // last UIDVALIDITY handed out, shared by all folders
	closed    bool
}

type mailbox struct {
	folders  map[string]*folder
	byID     map[uuid.UUID]*entry
	modSeq   uint64          // last ModSeq handed out, shared by the folders
	subs     map[string]bool // subscribed folder names
	delivery claim
	out      *outward // leases and outward state; nil until used
}

type folder struct {
	um.Folder
	msgs     []*entry  // UID order
	vanished []removal // ModSeq order
	forgot   uint64    // the largest ModSeq of a removal forgotten, for Vanished
}

// removal is a message removed from a folder, for ModSeqer.Vanished.
type removal struct {
	uid    um.UID
	modSeq uint64
}

// nextModSeqLocked returns the ModSeq of a new change in mb.
func (mb *mailbox) nextModSeqLocked() uint64 {
	mb.modSeq++
	return mb.modSeq
}

type entry struct {
	m       um.Message
	content []byte // shared by copies; never modified
}

// New returns an empty store.
func New() *Store {
	return &Store{mailboxes: make(map[string]*mailbox), validity: uint32(time.Now().Unix())}
}

func (s *Store) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return um.ErrClosed
	}
	return nil
}

// lockMailbox takes the lock and returns mailbox name; on error the lock
// is not held.
func (s *Store) lockMailbox(ctx context.Context, name string) (*mailbox, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	mb, err := s.mailboxLocked(name)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	return mb, nil
}

func (s *Store) mailboxLocked(name string) (*mailbox, error) {
	mb := s.mailboxes[name]
	if mb == nil {
		return nil, fmt.Errorf("memstore: mailbox %q: %w", name, um.ErrNotFound)
	}
	return mb, nil
}

func (s *Store) folderLocked(name, f string) (*mailbox, *folder, error) {
	mb, err := s.mailboxLocked(name)
	if err != nil {
		return nil, nil, err
	}
	fo := mb.folders[f]
	if fo == nil {
		return nil, nil, fmt.Errorf("memstore: folder %q of %q: %w", f, name, um.ErrNotFound)
	}
	return mb, fo, nil
}

func (s *Store) newFolderLocked(mb *mailbox, name string) *folder {
	s.validity++
	return &folder{Folder: um.Folder{Name: name, UIDValidity: s.validity, UIDNext: 1, HighestModSeq: mb.nextModSeqLocked()}}
}

// CreateMailbox implements um.Store.
func (s *Store) CreateMailbox(ctx context.Context, name string) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	if s.mailboxes[name] != nil {
		return fmt.Errorf("memstore: mailbox %q: %w", name, um.ErrExists)
	}
	mb := &mailbox{
		folders: make(map[string]*folder),
		byID:    make(map[uuid.UUID]*entry),
		subs:    map[string]bool{um.Inbox: true, um.Trash: true},
	}
	mb.folders[um.Inbox] = s.newFolderLocked(mb, um.Inbox)
	mb.folders[um.Trash] = s.newFolderLocked(mb, um.Trash)
	s.mailboxes[name] = mb
	return nil
}

// Mailboxes implements um.Store.
func (s *Store) Mailboxes(ctx context.Context) ([]string, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.mailboxes))
	for n := range s.mailboxes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Folders implements um.Store.
func (s *Store) Folders(ctx context.Context, name string) ([]um.Folder, error) {
	mb, err := s.lockMailbox(ctx, name)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	out := make([]um.Folder, 0, len(mb.folders))
	for _, f := range mb.folders {
		out = append(out, f.Folder)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// CreateFolder implements um.Store.
func (s *Store) CreateFolder(ctx context.Context, name, f string) (um.Folder, error) {
	mb, err := s.lockMailbox(ctx, name)
	if err != nil {
		return um.Folder{}, err
	}
	defer s.mu.Unlock()
	if mb.folders[f] != nil {
		return um.Folder{}, fmt.Errorf("memstore: folder %q: %w", f, um.ErrExists)
	}
	fo := s.newFolderLocked(mb, f)
	mb.folders[f] = fo
	return fo.Folder, nil
}

// RenameFolder implements um.Store.
func (s *Store) RenameFolder(ctx context.Context, name, from, to string) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	mb, fo, err := s.folderLocked(name, from)
	if err != nil {
		return err
	}
	if from == um.Inbox || from == um.Trash || to == um.Inbox || to == um.Trash {
		return fmt.Errorf("memstore: rename %q: %w", from, um.ErrReserved)
	}
	if mb.folders[to] != nil {
		return fmt.Errorf("memstore: folder %q: %w", to, um.ErrExists)
	}
	delete(mb.folders, from)
	fo.Name = to
	mb.folders[to] = fo
	for _, e := range fo.msgs {
		e.m.Folder = to
	}
	return nil
}

// DeleteFolder implements um.Store.
func (s *Store) DeleteFolder(ctx context.Context, name, f string) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	mb, fo, err := s.folderLocked(name, f)
	if err != nil {
		return err
	}
	if f == um.Inbox || f == um.Trash {
		return fmt.Errorf("memstore: delete %q: %w", f, um.ErrReserved)
	}
	for _, e := range fo.msgs {
		delete(mb.byID, e.m.ID)
	}
	delete(mb.folders, f)
	return nil
}

// Append implements um.Store. The content is read before the lock is taken,
// so a slow reader holds up no one.
func (s *Store) Append(ctx context.Context, name string, m um.Message, r io.Reader) (um.Message, error) {
	return s.appendChecked(ctx, name, m, r, nil)
}

// appendChecked is Append that, when check is not nil, calls it under the
// lock before anything changes and fails with its error.
func (s *Store) appendChecked(ctx context.Context, name string, m um.Message, r io.Reader, check func() error) (um.Message, error) {
	if r == nil {
		return um.Message{}, fmt.Errorf("memstore: %w: nil reader", um.ErrInvalid)
	}
	content, err := io.ReadAll(r)
	if err != nil {
		return um.Message{}, fmt.Errorf("memstore: read content: %w", err)
	}
	if err := s.lock(ctx); err != nil {
		return um.Message{}, err
	}
	defer s.mu.Unlock()
	mb, fo, err := s.folderLocked(name, m.Folder)
	if err != nil {
		return um.Message{}, err
	}
	if mb.byID[m.ID] != nil {
		return um.Message{}, fmt.Errorf("memstore: message %s: %w", m.ID, um.ErrExists)
	}
	if check != nil {
		if err := check(); err != nil {
			return um.Message{}, err
		}
	}
	m = m.Clone()
	m.Size = int64(len(content))
	e := &entry{m: m, content: content}
	s.addLocked(mb, fo, e, mb.nextModSeqLocked())
	return e.m.Clone(), nil
}

func (s *Store) addLocked(mb *mailbox, fo *folder, e *entry, modSeq uint64) {
	e.m.Folder = fo.Name
	e.m.ModSeq = modSeq
	fo.HighestModSeq = modSeq
	e.m.UID = fo.UIDNext
	fo.UIDNext++
	fo.msgs = append(fo.msgs, e)
	mb.byID[e.m.ID] = e
}

// List implements um.Store.
func (s *Store) List(ctx context.Context, name, f string) ([]um.Message, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	_, fo, err := s.folderLocked(name, f)
	if err != nil {
		return nil, err
	}
	out := make([]um.Message, len(fo.msgs))
	for i, e := range fo.msgs {
		out[i] = e.m.Clone()
	}
	return out, nil
}

func (s *Store) entryLocked(name string, id uuid.UUID) (*mailbox, *entry, error) {
	mb, err := s.mailboxLocked(name)
	if err != nil {
		return nil, nil, err
	}
	e := mb.byID[id]
	if e == nil {
		return nil, nil, fmt.Errorf("memstore: message %s of %q: %w", id, name, um.ErrNotFound)
	}
	return mb, e, nil
}

// Get implements um.Store.
func (s *Store) Get(ctx context.Context, name string, id uuid.UUID) (um.Message, error) {
	if err := s.lock(ctx); err != nil {
		return um.Message{}, err
	}
	defer s.mu.Unlock()
	_, e, err := s.entryLocked(name, id)
	if err != nil {
		return um.Message{}, err
	}
	return e.m.Clone(), nil
}

// Open implements um.Store.
func (s *Store) Open(ctx context.Context, name string, id uuid.UUID) (io.ReadCloser, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	_, e, err := s.entryLocked(name, id)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(e.content)), nil
}

func (s *Store) entriesLocked(name string, ids []uuid.UUID) (*mailbox, []*entry, error) {
	mb, err := s.mailboxLocked(name)
	if err != nil {
		return nil, nil, err
	}
	es := make([]*entry, len(ids))
	for i, id := range ids {
		if es[i] = mb.byID[id]; es[i] == nil {
			return nil, nil, fmt.Errorf("memstore: message %s of %q: %w", id, name, um.ErrNotFound)
		}
	}
	return mb, es, nil
}

// SetFlags implements um.Store.
func (s *Store) SetFlags(ctx context.Context, name string, ids []uuid.UUID, op um.FlagOp) ([]um.Message, error) {
	changed, _, err := s.SetFlagsIfUnchanged(ctx, name, ids, op, ^uint64(0))
	return changed, err
}

// SetFlagsIfUnchanged implements um.ConditionalFlagger.
func (s *Store) SetFlagsIfUnchanged(ctx context.Context, name string, ids []uuid.UUID, op um.FlagOp, since uint64) (changed []um.Message, modified []uuid.UUID, err error) {
	if err := s.lock(ctx); err != nil {
		return nil, nil, err
	}
	defer s.mu.Unlock()
	mb, es, err := s.entriesLocked(name, ids)
	if err != nil {
		return nil, nil, err
	}
	var modSeq uint64
	for _, e := range es {
		if e.m.ModSeq > since {
			modified = append(modified, e.m.ID)
			continue
		}
		f, kw := op.Apply(e.m.Flags, e.m.Keywords)
		if f == e.m.Flags && um.SameKeywords(kw, e.m.Keywords) {
			continue
		}
		if modSeq == 0 {
			modSeq = mb.nextModSeqLocked()
		}
		e.m.Flags, e.m.Keywords, e.m.ModSeq = f, kw, modSeq
		mb.folders[e.m.Folder].HighestModSeq = modSeq
		changed = append(changed, e.m.Clone())
	}
	return changed, modified, nil
}

func (fo *folder) removeLocked(e *entry, modSeq uint64) {
	i := sort.Search(len(fo.msgs), func(i int) bool { return fo.msgs[i].m.UID >= e.m.UID })
	if i < len(fo.msgs) && fo.msgs[i] == e {
		fo.msgs = append(fo.msgs[:i], fo.msgs[i+1:]...)
	}
	fo.vanishLocked(e.m.UID, modSeq)
}

// vanishedKept is how many removals a folder remembers for Vanished; older
// ones are forgotten, so a client that appends and expunges in a loop
// cannot grow the store without bound.
var vanishedKept = 10000

func (fo *folder) vanishLocked(uid um.UID, modSeq uint64) {
	fo.vanished = append(fo.vanished, removal{uid: uid, modSeq: modSeq})
	fo.HighestModSeq = modSeq
	if drop := len(fo.vanished) - vanishedKept; drop > 0 {
		fo.forgot = fo.vanished[drop-1].modSeq
		fo.vanished = slices.Clone(fo.vanished[drop:])
	}
}

// Move implements um.Store.
func (s *Store) Move(ctx context.Context, name string, ids []uuid.UUID, to string, now time.Time) ([]um.Message, error) {
	return s.fileChecked(ctx, name, ids, to, nil, now, nil)
}

// Copy implements um.Store.
func (s *Store) Copy(ctx context.Context, name string, ids []uuid.UUID, to string, newIDs []uuid.UUID, now time.Time) ([]um.Message, error) {
	if len(newIDs) != len(ids) {
		return nil, fmt.Errorf("memstore: %w: %d ids, %d new ids", um.ErrInvalid, len(ids), len(newIDs))
	}
	return s.fileChecked(ctx, name, ids, to, newIDs, now, nil)
}

// fileChecked puts the messages ids of mailbox name into folder to with new
// UIDs and Added set to now: moves them when newIDs is nil, else adds copies
// with the IDs newIDs that share the content. Nothing changes unless all
// of them can go, and check, when not nil, admits them under the lock.
func (s *Store) fileChecked(ctx context.Context, name string, ids []uuid.UUID, to string, newIDs []uuid.UUID, now time.Time, check func([]*entry) error) ([]um.Message, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	mb, dst, err := s.folderLocked(name, to)
	if err != nil {
		return nil, err
	}
	_, es, err := s.entriesLocked(name, ids)
	if err != nil {
		return nil, err
	}
	for _, id := range newIDs {
		if mb.byID[id] != nil {
			return nil, fmt.Errorf("memstore: message %s: %w", id, um.ErrExists)
		}
	}
	if check != nil {
		if err := check(es); err != nil {
			return nil, err
		}
	}
	out := make([]um.Message, len(es))
	modSeq := mb.nextModSeqLocked()
	for i, e := range es {
		if newIDs == nil {
			mb.folders[e.m.Folder].removeLocked(e, modSeq)
		} else {
			e = &entry{m: e.m.Clone(), content: e.content}
			e.m.ID = newIDs[i]
		}
		if !now.IsZero() {
			e.m.Added = now
		}
		s.addLocked(mb, dst, e, modSeq)
		out[i] = e.m.Clone()
	}
	return out, nil
}

// Remove implements um.Store.
func (s *Store) Remove(ctx context.Context, name string, ids []uuid.UUID) error {
	if err := s.lock(ctx); err != nil {
		return err
	}
	defer s.mu.Unlock()
	mb, es, err := s.entriesLocked(name, ids)
	if err != nil {
		return err
	}
	modSeq := mb.nextModSeqLocked()
	for _, e := range es {
		mb.folders[e.m.Folder].removeLocked(e, modSeq)
		delete(mb.byID, e.m.ID)
	}
	return nil
}

// Close implements um.Store. Later calls fail with um.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// Expunge implements um.Expunger.
func (s *Store) Expunge(ctx context.Context, name, f string, uids []um.UID) ([]um.Message, error) {
	if err := s.lock(ctx); err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	mb, fo, err := s.folderLocked(name, f)
	if err != nil {
		return nil, err
	}
	want := map[um.UID]bool{}
	for _, u := range uids {
		want[u] = true
	}
	var gone []um.Message
	var modSeq uint64
	kept := fo.msgs[:0]
	for _, e := range fo.msgs {
		if e.m.Flags.Has(um.FlagDeleted) && (uids == nil || want[e.m.UID]) {
			if modSeq == 0 {
				modSeq = mb.nextModSeqLocked()
			}
			gone = append(gone, e.m.Clone())
			delete(mb.byID, e.m.ID)
			fo.vanishLocked(e.m.UID, modSeq)
			continue
		}
		kept = append(kept, e)
	}
	clear(fo.msgs[len(kept):])
	fo.msgs = kept
	return gone, nil
}

// Vanished implements um.ModSeqer. A folder remembers its last 10,000
// removals.
func (s *Store) Vanished(ctx context.Context, name, f string, since uint64) ([]um.UID, uint64, error) {
	if err := s.lock(ctx); err != nil {
		return nil, 0, err
	}
	defer s.mu.Unlock()
	_, fo, err := s.folderLocked(name, f)
	if err != nil {
		return nil, 0, err
	}
	var uids []um.UID
	for _, r := range fo.vanished {
		if r.modSeq > since {
			uids = append(uids, r.uid)
		}
	}
	slices.Sort(uids)
	return uids, fo.forgot, nil
}

// SubscribeFolder implements um.FolderSubscriber.
func (s *Store) SubscribeFolder(ctx context.Context, name, f string) error {
	mb, err := s.lockMailbox(ctx, name)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if !mb.subs[f] && len(mb.subs) >= um.MaxSubscriptions {
		return fmt.Errorf("memstore: subscribe %q: %w: %d subscriptions already", f, um.ErrInvalid, len(mb.subs))
	}
	mb.subs[f] = true
	return nil
}

// UnsubscribeFolder implements um.FolderSubscriber.
func (s *Store) UnsubscribeFolder(ctx context.Context, name, f string) error {
	mb, err := s.lockMailbox(ctx, name)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if !mb.subs[f] {
		return fmt.Errorf("memstore: subscription %q of %q: %w", f, name, um.ErrNotFound)
	}
	delete(mb.subs, f)
	return nil
}

// SubscribedFolders implements um.FolderSubscriber.
func (s *Store) SubscribedFolders(ctx context.Context, name string) ([]string, error) {
	mb, err := s.lockMailbox(ctx, name)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	names := make([]string, 0, len(mb.subs))
	for n := range mb.subs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}
