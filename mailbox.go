package um

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/google/uuid"
)

// Mailbox is a handle on one voice mailbox, shared by call control and IMAP
// sessions. Handles are cheap; any number may exist for one mailbox, and
// all are safe for concurrent use.
//
// Methods that change the mailbox commit to the store, then publish the
// change to subscribers and the MWI dispatcher before they return. Give them
// a context made with WithSource to keep the change from echoing back to
// your own Subscription.
type Mailbox struct {
	svc  *Service
	name string
}

// Name returns the mailbox name, e.g. "1001".
func (mb *Mailbox) Name() string { return mb.name }

// CanonicalFolder returns the stored spelling of a folder name: INBOX in any
// case is "INBOX".
func CanonicalFolder(name string) string {
	if strings.EqualFold(name, Inbox) {
		return Inbox
	}
	return name
}

func isReserved(folder string) bool { return folder == Inbox || folder == Trash }

// Folders lists the mailbox's folders, sorted by name.
func (mb *Mailbox) Folders(ctx context.Context) ([]Folder, error) {
	fs, err := mb.svc.store.Folders(ctx, mb.name)
	if err != nil {
		return nil, fmt.Errorf("um: folders of %q: %w", mb.name, err)
	}
	return fs, nil
}

// Folder returns one folder's UIDVALIDITY and UIDNEXT.
func (mb *Mailbox) Folder(ctx context.Context, folder string) (Folder, error) {
	folder = CanonicalFolder(folder)
	fs, err := mb.Folders(ctx)
	if err != nil {
		return Folder{}, err
	}
	for _, f := range fs {
		if f.Name == folder {
			return f, nil
		}
	}
	return Folder{}, fmt.Errorf("um: folder %q of %q: %w", folder, mb.name, ErrNotFound)
}

// CreateFolder creates a user folder. It fails with ErrExists when the
// folder exists, and with a *LimitError (ErrLimit) when the mailbox holds
// Options.MaxFolders user folders already.
func (mb *Mailbox) CreateFolder(ctx context.Context, folder string) (Folder, error) {
	folder = CanonicalFolder(folder)
	if err := validFolder(folder); err != nil {
		return Folder{}, err
	}
	if isReserved(folder) {
		return Folder{}, fmt.Errorf("um: create folder %q: %w", folder, ErrExists)
	}
	defer mb.svc.lock(mb.name)()
	if err := mb.checkFolderRoomLocked(ctx, folder); err != nil {
		return Folder{}, err
	}
	f, err := mb.svc.store.CreateFolder(ctx, mb.name, folder)
	if err != nil {
		return Folder{}, fmt.Errorf("um: create folder %q in %q: %w", folder, mb.name, err)
	}
	mb.svc.commit(ctx, mb.name, []Event{{Kind: EventFolderCreated, Folder: folder}})
	return f, nil
}

// checkFolderRoomLocked fails with a *LimitError when the mailbox holds
// Options.MaxFolders user folders and folder is not one of them (creating
// an existing folder is ErrExists, which the store reports). Folders come
// into being only here: APPEND, COPY and MOVE into a missing folder fail
// with ErrNotFound, and a rename replaces one name with another.
func (mb *Mailbox) checkFolderRoomLocked(ctx context.Context, folder string) error {
	max := mb.svc.opts.MaxFolders
	if max == 0 {
		max = DefaultMaxFolders
	}
	if max < 0 {
		return nil
	}
	fs, err := mb.Folders(ctx)
	if err != nil {
		return err
	}
	n := 0
	for _, f := range fs {
		if f.Name == folder {
			return nil
		}
		if !isReserved(f.Name) {
			n++
		}
	}
	if n >= max {
		return fmt.Errorf("um: create folder %q in %q: %w", folder, mb.name, &LimitError{What: "folders in a voice mailbox", Max: max})
	}
	return nil
}

// RenameFolder renames a user folder.
func (mb *Mailbox) RenameFolder(ctx context.Context, from, to string) error {
	from, to = CanonicalFolder(from), CanonicalFolder(to)
	if err := validFolder(to); err != nil {
		return err
	}
	if isReserved(from) || isReserved(to) {
		return fmt.Errorf("um: rename folder %q to %q: %w", from, to, ErrReserved)
	}
	defer mb.svc.lock(mb.name)()
	if err := mb.svc.store.RenameFolder(ctx, mb.name, from, to); err != nil {
		return fmt.Errorf("um: rename folder %q to %q in %q: %w", from, to, mb.name, err)
	}
	mb.svc.commit(ctx, mb.name, []Event{{Kind: EventFolderRenamed, Folder: from, NewName: to}})
	return nil
}

// DeleteFolder deletes a user folder and the messages in it.
func (mb *Mailbox) DeleteFolder(ctx context.Context, folder string) error {
	folder = CanonicalFolder(folder)
	if isReserved(folder) {
		return fmt.Errorf("um: delete folder %q: %w", folder, ErrReserved)
	}
	defer mb.svc.lock(mb.name)()
	if err := mb.svc.store.DeleteFolder(ctx, mb.name, folder); err != nil {
		return fmt.Errorf("um: delete folder %q in %q: %w", folder, mb.name, err)
	}
	mb.svc.commit(ctx, mb.name, []Event{{Kind: EventFolderDeleted, Folder: folder}})
	return nil
}

// List returns the messages of a folder in UID order.
func (mb *Mailbox) List(ctx context.Context, folder string) ([]Message, error) {
	msgs, err := mb.svc.store.List(ctx, mb.name, CanonicalFolder(folder))
	if err != nil {
		return nil, fmt.Errorf("um: list %q of %q: %w", folder, mb.name, err)
	}
	return msgs, nil
}

// Message returns one message by ID.
func (mb *Mailbox) Message(ctx context.Context, id uuid.UUID) (Message, error) {
	m, err := mb.svc.store.Get(ctx, mb.name, id)
	if err != nil {
		return Message{}, fmt.Errorf("um: message %s of %q: %w", id, mb.name, err)
	}
	return m, nil
}

// ByUID returns the message with uid in folder.
func (mb *Mailbox) ByUID(ctx context.Context, folder string, uid UID) (Message, error) {
	msgs, err := mb.List(ctx, folder)
	if err != nil {
		return Message{}, err
	}
	for _, m := range msgs {
		if m.UID == uid {
			return m, nil
		}
	}
	return Message{}, fmt.Errorf("um: UID %d in %q of %q: %w", uid, folder, mb.name, ErrNotFound)
}

// OpenAudio opens the audio of a voicemail for playback (or the content of
// an appended e-mail). It does not mark the message heard: call MarkHeard
// when the caller has listened.
func (mb *Mailbox) OpenAudio(ctx context.Context, id uuid.UUID) (io.ReadCloser, error) {
	rc, err := mb.svc.store.Open(ctx, mb.name, id)
	if err != nil {
		return nil, fmt.Errorf("um: open %s of %q: %w", id, mb.name, err)
	}
	return rc, nil
}

// Deposit stores a finished recording as a new, unheard message in INBOX and
// returns it. Urgent messages start out \Flagged. It fails with
// ErrMailboxFull when the mailbox is at its limits, ErrInvalid or
// ErrBadAudio for bad input; then nothing is stored.
//
// The recording is checked before anything is stored. d.AudioType is parsed
// as a media type (parameters such as codecs=1 are kept); a type that is not
// audio/*, or whose recording's first bytes say another format (Ogg bytes
// labelled audio/wav, WAV bytes labelled audio/mpeg), fails with
// ErrBadAudio. The WAV types (audio/wav, audio/x-wav, audio/wave,
// audio/vnd.wave) are stored as audio/wav. A WAV's length is read from its
// header, and the message records it when d.Duration is zero or more than
// DurationTolerance away from it: Subject, Content-Duration and
// MaxRecordedTime all see the length of the audio, not a caller's mistake.
// A WAV shorter than its header says fails with ErrBadAudio. For other
// types um cannot measure the length, and a zero d.Duration fails with
// ErrInvalid.
//
// Deposit reads the first 64 KiB of d.Audio before it takes the mailbox's
// write lock, and the rest while holding it: hand it a finished recording,
// not a live stream. (A WAV whose header leaves the data size unset, as
// streaming recorders write, is read whole first unless d.Audio is an
// io.Seeker; up to 64 MiB.)
func (mb *Mailbox) Deposit(ctx context.Context, d Deposit) (Message, error) {
	if d.Audio == nil {
		return Message{}, fmt.Errorf("%w: deposit without audio", ErrInvalid)
	}
	if d.Duration < 0 {
		return Message{}, fmt.Errorf("%w: negative duration %v", ErrInvalid, d.Duration)
	}
	rec, err := checkRecording(d.AudioType, d.Audio)
	if err != nil {
		return Message{}, err
	}
	d.AudioType = rec.audioType
	if d.Duration = depositDuration(d.Duration, rec.measured); d.Duration == 0 && rec.measured < 0 {
		return Message{}, fmt.Errorf("%w: no duration for %s audio, which um cannot measure", ErrInvalid, d.AudioType)
	}
	now := mb.svc.opts.Now()
	if d.Time.IsZero() {
		d.Time = now
	}
	m := Message{
		ID:           uuid.New(),
		Folder:       Inbox,
		Urgent:       d.Urgent,
		CallerNumber: d.CallerNumber,
		CallerName:   d.CallerName,
		Time:         d.Time.UTC(),
		Duration:     d.Duration,
		AudioType:    d.AudioType,
		Transcript:   d.Transcript,
		Added:        now.UTC(),
	}
	if d.Urgent {
		m.Flags = FlagFlagged
	}
	return mb.add(ctx, m, rec.r)
}

// Append stores an e-mail a mail client uploaded into a user folder. Flags,
// Keywords and Added are taken from tmpl.
//
// INBOX holds voicemail only. An e-mail appended there is refused with
// ErrNotVoice (InboxRefusal says why in plain words), unless it is a
// rendering of a voicemail of this mailbox (its X-Um-Message-Id names one
// the store holds): then that voicemail itself comes back to INBOX, with its
// ID, flags and heard state, from Trash as Undelete brings it, and Append
// returns it; the offered bytes and tmpl are not kept. This is how a mail
// client's move of a voicemail back from another account arrives.
func (mb *Mailbox) Append(ctx context.Context, folder string, tmpl Message, r io.Reader) (Message, error) {
	folder = CanonicalFolder(folder)
	if r == nil {
		return Message{}, fmt.Errorf("%w: append without content", ErrInvalid)
	}
	if folder == Inbox {
		return mb.appendToInbox(ctx, r)
	}
	m := Message{
		ID:       uuid.New(),
		Folder:   folder,
		Flags:    tmpl.Flags,
		Keywords: normalizeKeywords(append([]string(nil), tmpl.Keywords...)),
		Added:    tmpl.Added,
		Raw:      true,
	}
	if m.Added.IsZero() {
		m.Added = mb.svc.opts.Now()
	}
	m.Added = m.Added.UTC()
	return mb.add(ctx, m, r)
}

func (mb *Mailbox) add(ctx context.Context, m Message, r io.Reader) (Message, error) {
	defer mb.svc.lock(mb.name)()
	stored, err := mb.appendLocked(ctx, m, r)
	if err != nil {
		return Message{}, fmt.Errorf("um: store message in %q of %q: %w", m.Folder, mb.name, err)
	}
	mb.svc.commit(ctx, mb.name, []Event{{Kind: EventAdded, Folder: stored.Folder, Message: stored.Clone()}})
	if !stored.Raw {
		mb.svc.opts.Observer.Deposited(mb.name, stored)
	}
	return stored, nil
}

// MarkHeard marks messages heard (\Seen), as when they were played.
func (mb *Mailbox) MarkHeard(ctx context.Context, ids ...uuid.UUID) error {
	_, err := mb.SetFlags(ctx, ids, FlagOp{Mode: FlagsAdd, Flags: FlagHeard})
	return err
}

// MarkUnheard clears \Seen, so the messages count as new again.
func (mb *Mailbox) MarkUnheard(ctx context.Context, ids ...uuid.UUID) error {
	_, err := mb.SetFlags(ctx, ids, FlagOp{Mode: FlagsRemove, Flags: FlagHeard})
	return err
}

// SetFlags applies op to messages and returns those that changed. A \Seen
// that a client (a ctx made with WithSource) sets and then, by setting
// \Deleted, deletes within DeleteSeenWindow is taken back: see
// DeleteSeenWindow for what counts as heard.
func (mb *Mailbox) SetFlags(ctx context.Context, ids []uuid.UUID, op FlagOp) ([]Message, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	defer mb.svc.lock(mb.name)()
	heardBefore := mb.heardBeforeLocked(ctx, ids, op)
	changed, err := mb.svc.store.SetFlags(ctx, mb.name, ids, op)
	if err != nil {
		return nil, fmt.Errorf("um: set flags in %q: %w", mb.name, err)
	}
	changed, display := mb.noteFlagsLocked(ctx, ids, op, heardBefore, changed)
	events := make([]Event, len(changed))
	for i, m := range changed {
		events[i] = Event{Kind: EventFlags, Folder: m.Folder, Message: m.Clone()}
	}
	mb.svc.commit(ctx, mb.name, events)
	mb.commitDisplayFixLocked(ctx, display)
	return changed, nil
}

// Delete deletes messages the way the phone does: they move to Trash, where
// Undelete can bring them back. Messages in Trash already, and all messages
// when Options.PurgeOnDelete is set, are removed for good. A message that
// leaves Trash while Delete runs (undeleted by another caller) moves back
// to Trash rather than being removed.
func (mb *Mailbox) Delete(ctx context.Context, ids ...uuid.UUID) error {
	if len(ids) == 0 {
		return nil
	}
	var toTrash, purge []uuid.UUID
	for _, id := range ids {
		m, err := mb.Message(ctx, id)
		if err != nil {
			return err
		}
		if m.Folder == Trash || mb.svc.opts.PurgeOnDelete {
			purge = append(purge, id)
		} else {
			toTrash = append(toTrash, id)
		}
	}
	if len(purge) > 0 && !mb.svc.opts.PurgeOnDelete {
		// Only what is still in Trash is purged: a message undeleted since
		// it was looked up is deleted again, never removed for good.
		moved, err := mb.purgeIn(ctx, purge, Trash)
		if err != nil {
			return err
		}
		toTrash, purge = append(toTrash, moved...), nil
	}
	if len(toTrash) > 0 {
		if _, err := mb.Move(ctx, toTrash, Trash); err != nil {
			return err
		}
	}
	if len(purge) > 0 {
		return mb.purge(ctx, purge)
	}
	return nil
}

// Undelete brings a message back from Trash to INBOX, clearing \Deleted, and
// returns it with its new INBOX UID. It comes back heard only if it was
// heard before it was deleted: a client's delete-time \Seen was taken back
// at the delete (DeleteSeenWindow).
func (mb *Mailbox) Undelete(ctx context.Context, id uuid.UUID) (Message, error) {
	m, err := mb.Message(ctx, id)
	if err != nil {
		return Message{}, err
	}
	if m.Folder != Trash {
		return Message{}, fmt.Errorf("um: undelete %s: %w: it is in %q, not in Trash", id, ErrNotFound, m.Folder)
	}
	if m.Flags.Has(FlagDeleted) {
		if _, err := mb.SetFlags(ctx, []uuid.UUID{id}, FlagOp{Mode: FlagsRemove, Flags: FlagDeleted}); err != nil {
			return Message{}, err
		}
	}
	moved, err := mb.Move(ctx, []uuid.UUID{id}, Inbox)
	if err != nil {
		return Message{}, err
	}
	return moved[0], nil
}

// Move moves messages to another folder and returns them as they are there.
// Moving voicemail into INBOX is allowed. An e-mail (Raw) moved into INBOX
// that is a copy of a voicemail of this mailbox, as Append describes, brings
// that voicemail back and is removed; any other e-mail refuses the move with
// ErrNotVoice and nothing moves. A move to Trash takes back a client's
// delete-time \Seen (DeleteSeenWindow).
func (mb *Mailbox) Move(ctx context.Context, ids []uuid.UUID, folder string) ([]Message, error) {
	folder = CanonicalFolder(folder)
	return mb.transfer(ctx, "move to", ids, folder, true, func(before []Message) ([]Message, error) {
		moved, err := mb.moveLocked(ctx, before, ids, folder)
		if err != nil {
			return nil, fmt.Errorf("um: move to %q in %q: %w", folder, mb.name, err)
		}
		var display []Message
		if folder == Trash {
			moved, display = mb.takeBackSeenLocked(ctx, moved, func(i int) (uuid.UUID, bool) { return moved[i].ID, true })
		}
		events := make([]Event, 0, 2*len(moved))
		for i, m := range moved {
			events = append(events,
				Event{Kind: EventRemoved, Folder: before[i].Folder, Message: Message{ID: m.ID, UID: before[i].UID, Folder: before[i].Folder}},
				Event{Kind: EventAdded, Folder: m.Folder, Message: m.Clone()})
		}
		mb.svc.commit(ctx, mb.name, events)
		mb.commitDisplayFixLocked(ctx, display)
		return moved, nil
	})
}

// Copy copies messages into a folder under new IDs and returns the copies.
// An e-mail (Raw) copied into INBOX that is a copy of a voicemail of this
// mailbox, as Append describes, brings that voicemail itself back (no second
// copy of a voicemail enters INBOX) and is returned in its place; any other
// e-mail refuses the copy with ErrNotVoice and nothing is copied. A copy to
// Trash takes back a client's delete-time \Seen on the copy
// (DeleteSeenWindow), as a move there does.
func (mb *Mailbox) Copy(ctx context.Context, ids []uuid.UUID, folder string) ([]Message, error) {
	folder = CanonicalFolder(folder)
	return mb.transfer(ctx, "copy to", ids, folder, false, func(before []Message) ([]Message, error) {
		copies, err := mb.copyLocked(ctx, before, ids, folder)
		if err != nil {
			return nil, fmt.Errorf("um: copy to %q in %q: %w", folder, mb.name, err)
		}
		var display []Message
		if folder == Trash {
			// A client that deletes by COPY to Trash and \Deleted (Outlook).
			copies, display = mb.takeBackSeenLocked(ctx, copies, func(i int) (uuid.UUID, bool) { return ids[i], true })
		}
		events := make([]Event, len(copies))
		for i, m := range copies {
			events[i] = Event{Kind: EventAdded, Folder: m.Folder, Message: m.Clone()}
		}
		mb.svc.commit(ctx, mb.name, events)
		mb.commitDisplayFixLocked(ctx, display)
		return copies, nil
	})
}

// transfer is what Move and Copy (how: "move to", "copy to") share. An
// e-mail offered to INBOX that copies a voicemail of this mailbox brings
// that voicemail back (returnToInbox); any other e-mail offered to INBOX
// refuses the whole request. Otherwise do runs under the mailbox lock with
// the messages as they are before, all of them found.
func (mb *Mailbox) transfer(ctx context.Context, how string, ids []uuid.UUID, folder string, move bool, do func(before []Message) ([]Message, error)) ([]Message, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	if folder == Inbox {
		if raw, err := mb.hasRaw(ctx, ids); err != nil {
			return nil, err
		} else if raw {
			return mb.returnToInbox(ctx, how, ids, move)
		}
	}
	defer mb.svc.lock(mb.name)()
	before, err := mb.getAllLocked(ctx, ids)
	if err != nil {
		return nil, err
	}
	if folder == Inbox {
		for _, m := range before {
			if m.Raw {
				return nil, mb.notVoiceError(how)
			}
		}
	}
	return do(before)
}

// Expunge removes for good the messages of folder that carry \Deleted, as
// IMAP EXPUNGE does, and returns them. With uids, only those of them (UID
// EXPUNGE). The flag and the folder are checked under the mailbox lock, so a
// message undeleted or moved away meanwhile by the phone or another client
// of this node is kept. On a store that implements Expunger (pgstore,
// boltstore) the check and the removal are one atomic step, so that holds
// across the nodes of a cluster too.
func (mb *Mailbox) Expunge(ctx context.Context, folder string, uids []UID) ([]Message, error) {
	folder = CanonicalFolder(folder)
	defer mb.svc.lock(mb.name)()
	var want map[UID]bool
	if uids != nil {
		want = make(map[UID]bool, len(uids))
		for _, u := range uids {
			want[u] = true
		}
	}
	if x := mb.svc.caps.expunger; x != nil {
		gone, err := x.Expunge(ctx, mb.name, folder, uids)
		if err != nil {
			return nil, fmt.Errorf("um: expunge %q of %q: %w", folder, mb.name, err)
		}
		mb.publishRemoved(ctx, gone)
		return gone, nil
	}
	for attempt := 0; ; attempt++ {
		msgs, err := mb.List(ctx, folder)
		if err != nil {
			return nil, err
		}
		var gone []Message
		for _, m := range msgs {
			if m.Flags.Has(FlagDeleted) && (want == nil || want[m.UID]) {
				gone = append(gone, m)
			}
		}
		if len(gone) == 0 {
			return nil, nil
		}
		err = mb.svc.store.Remove(ctx, mb.name, messageIDs(gone))
		if errors.Is(err, ErrNotFound) && attempt < 3 {
			continue // another node expunged some of them meanwhile: look again
		}
		if err != nil {
			return nil, fmt.Errorf("um: expunge %q of %q: %w", folder, mb.name, err)
		}
		mb.publishRemoved(ctx, gone)
		return gone, nil
	}
}

func (mb *Mailbox) publishRemoved(ctx context.Context, gone []Message) {
	events := make([]Event, len(gone))
	for i, m := range gone {
		events[i] = Event{Kind: EventRemoved, Folder: m.Folder, Message: Message{ID: m.ID, UID: m.UID, Folder: m.Folder}}
	}
	mb.svc.commit(ctx, mb.name, events)
}

// Purge removes messages for good, from whatever folder they are in.
// Messages already gone are skipped, so two clients expunging the same
// message both succeed.
func (mb *Mailbox) Purge(ctx context.Context, ids ...uuid.UUID) error {
	return mb.purge(ctx, ids)
}

func (mb *Mailbox) purge(ctx context.Context, ids []uuid.UUID) error {
	_, err := mb.purgeIn(ctx, ids, "")
	return err
}

// purgeIn is purge, of the messages that are in folder when folder is not
// empty: it returns the others, left where they are. The look and the
// removal are one step under the mailbox's lock.
func (mb *Mailbox) purgeIn(ctx context.Context, ids []uuid.UUID, folder string) (elsewhere []uuid.UUID, err error) {
	if len(ids) == 0 {
		return nil, nil
	}
	defer mb.svc.lock(mb.name)()
	// Purging is idempotent: a message another session or node removed
	// first is already where the caller wants it.
	for attempt := 0; ; attempt++ {
		var present []Message
		elsewhere = elsewhere[:0]
		for _, id := range ids {
			m, err := mb.Message(ctx, id)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if folder != "" && m.Folder != folder {
				elsewhere = append(elsewhere, id)
				continue
			}
			present = append(present, m)
		}
		if len(present) == 0 {
			return elsewhere, nil
		}
		err := mb.svc.store.Remove(ctx, mb.name, messageIDs(present))
		if errors.Is(err, ErrNotFound) && attempt < 3 {
			continue // removed meanwhile by another node: look again
		}
		if err != nil {
			return nil, fmt.Errorf("um: purge in %q: %w", mb.name, err)
		}
		events := make([]Event, len(present))
		for i, m := range present {
			events[i] = Event{Kind: EventRemoved, Folder: m.Folder, Message: Message{ID: m.ID, UID: m.UID, Folder: m.Folder}}
		}
		mb.svc.commit(ctx, mb.name, events)
		return elsewhere, nil
	}
}

func (mb *Mailbox) getAllLocked(ctx context.Context, ids []uuid.UUID) ([]Message, error) {
	out := make([]Message, len(ids))
	for i, id := range ids {
		m, err := mb.Message(ctx, id)
		if err != nil {
			return nil, err
		}
		out[i] = m
	}
	return out, nil
}

// MWI returns the mailbox's current message-waiting state, read from the
// store.
func (mb *Mailbox) MWI(ctx context.Context) (MWIState, error) {
	return mb.svc.MWI(ctx, mb.name)
}

func messageIDs(msgs []Message) []uuid.UUID {
	out := make([]uuid.UUID, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

func validFolder(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty folder name", ErrInvalid)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%w: folder name %q has control characters", ErrInvalid, name)
		}
	}
	return nil
}
