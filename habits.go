package um

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Mail clients have habits that, taken literally, would change voicemail in
// ways its owner never meant. The rules here keep a voicemail whole under
// them; doc.go ("Mail client habits") is their user-facing description.

// DeleteSeenWindow is how long a \Seen a mail client sets stays a
// delete-time \Seen: when the same client (the same Source, see WithSource:
// one IMAP session, one sync worker) deletes a voicemail within this time
// after setting \Seen on it (moves or copies it to Trash, or sets \Deleted),
// the \Seen is taken back. Thunderbird, for one, marks a message read in the
// instant before it moves it to Trash, single or bulk, so without this rule
// every voicemail deleted unplayed from a mail client would come back heard
// from the phone's undelete.
//
// What counts as heard, exactly: a \Seen set by the phone (a change made
// without a Source), or by a client more than DeleteSeenWindow before that
// client deletes the message, or by a client that then does not delete it
// and did not set it within AutoDisplayWindow of its own delete of another
// message. The mark is kept in memory on the node that served the client
// and dropped when used, when the message is marked unheard, or when the
// phone marks it heard; a restart between the \Seen and the delete forgets
// it, which only leaves the message heard, as before this rule.
const DeleteSeenWindow = 5 * time.Second

// AutoDisplayWindow is how close to a client's delete a \Seen that client
// sets on another message must be to count as the client's automatic
// display of the next message, not as heard. Thunderbird, on Delete, asks
// for \Seen on the messages it deletes, then displays the next message
// (fetching its body, which sets \Seen) and then moves the deleted ones to
// Trash; the displayed voicemail has not been played. So when a client's
// delete is of that shape (it asked for \Seen on the deleted messages
// within DeleteSeenWindow before), a \Seen it set on another INBOX message
// after that request, or within AutoDisplayWindow after the delete, is taken
// back at once: the lamp stays lit, and the client is told the message is
// unread. A client that only sets \Deleted (mbsync, offlineimap), or syncs
// read flags before marking a message read and deleting it (neomutt), keeps
// every \Seen it sets; so does a message opened at any other time.
const AutoDisplayWindow = 2 * time.Second

// maxDeleteMarks bounds the recent client deletes remembered for
// AutoDisplayWindow.
const maxDeleteMarks = 256

// InboxRefusal is the plain-language reason to show a mail client user when
// an e-mail is offered to INBOX (by APPEND, COPY or MOVE): servers may use
// it as the text of their refusal. Errors um returns for it match
// ErrNotVoice.
const InboxRefusal = "Only voicemail can be put in INBOX. Keep e-mail in another folder."

// maxSeenMarks bounds the delete-time \Seen marks one Service remembers.
// Past it, marks that have expired are swept (at most once per
// DeleteSeenWindow), and while none has, new marks are not recorded (a
// voicemail deleted then stays heard, as without the rule): memory and work
// stay bounded whatever clients do.
const maxSeenMarks = 1 << 16

// maxReturnHeader bounds how much of an e-mail offered to INBOX is read to
// find its X-Um-Message-Id header.
const maxReturnHeader = 64 << 10

type seenKey struct {
	mailbox string
	id      uuid.UUID
}

// seenMark is a client's request to set \Seen on a message.
type seenMark struct {
	source any
	at     time.Time
	seq    uint64 // order among marks: one per SetFlags
	newly  bool   // the request made the message heard
}

// seenMarks remembers which client asked for \Seen on which message, and
// when, and which client deletes showed Thunderbird's habit. The zero value
// is ready to use.
type seenMarks struct {
	mu      sync.Mutex
	m       map[seenKey]seenMark
	seq     uint64
	swept   time.Time    // last sweep of a full map
	deletes []deleteMark // recent habit deletes, oldest first
}

type deleteMark struct {
	mailbox string
	source  any
	at      time.Time
}

// next returns the sequence number for the marks of one SetFlags.
func (s *seenMarks) next() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	return s.seq
}

func (s *seenMarks) set(k seenKey, v seenMark) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[seenKey]seenMark)
	}
	if v.at.Sub(s.swept) >= DeleteSeenWindow {
		// Marks past the window serve nothing: sweep them once per window,
		// one pass over the marks of about two windows. Kept until the map
		// filled, they grew it by 12 KB a second under imaptest's stress
		// run (6.5 MB at the cap), each mark with its client's Source.
		s.swept = v.at
		for k, old := range s.m {
			if v.at.Sub(old.at) > DeleteSeenWindow {
				delete(s.m, k)
			}
		}
	}
	if _, ok := s.m[k]; !ok && len(s.m) >= maxSeenMarks {
		return
	}
	if old, ok := s.m[k]; ok && old.newly && sameSource(old.source, v.source) {
		v.newly = true // asking again keeps what the first request did
	}
	s.m[k] = v
}

func (s *seenMarks) drop(k seenKey) {
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

// take returns the mark src left on k's message within DeleteSeenWindow
// before now, and forgets the mark either way.
func (s *seenMarks) take(k seenKey, src any, now time.Time) (seenMark, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	if !ok {
		return seenMark{}, false
	}
	delete(s.m, k)
	return v, src != nil && sameSource(v.source, src) && now.Sub(v.at) <= DeleteSeenWindow
}

// displayed records a habit delete by src in mailbox at now, and returns the
// messages, other than those in exclude, that src made heard after its
// request for \Seen numbered since and within AutoDisplayWindow before now,
// forgetting their marks.
func (s *seenMarks) displayed(mailbox string, src any, now time.Time, since uint64, exclude map[uuid.UUID]bool) []uuid.UUID {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.deletes) >= maxDeleteMarks {
		s.deletes = append(s.deletes[:0], s.deletes[1:]...)
	}
	s.deletes = append(s.deletes, deleteMark{mailbox, src, now})
	var ids []uuid.UUID
	for k, v := range s.m {
		if k.mailbox == mailbox && !exclude[k.id] && v.newly && v.seq > since && sameSource(v.source, src) && now.Sub(v.at) <= AutoDisplayWindow {
			ids = append(ids, k.id)
			delete(s.m, k)
		}
	}
	return ids
}

// deletedLately reports whether src made a habit delete in mailbox within
// AutoDisplayWindow before now.
func (s *seenMarks) deletedLately(mailbox string, src any, now time.Time) bool {
	if src == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.deletes) - 1; i >= 0; i-- {
		d := s.deletes[i]
		if now.Sub(d.at) > AutoDisplayWindow {
			return false
		}
		if d.mailbox == mailbox && sameSource(d.source, src) {
			return true
		}
	}
	return false
}

// setsHeard reports whether op can set \Seen.
func setsHeard(op FlagOp) bool {
	return op.Mode != FlagsRemove && op.Flags.Has(FlagHeard)
}

// setsDeleted reports whether op can set \Deleted.
func setsDeleted(op FlagOp) bool {
	return op.Mode != FlagsRemove && op.Flags.Has(FlagDeleted)
}

// heardBeforeLocked returns, when op may set \Seen for a client, which of
// ids were heard before it; nil when that need not be known.
func (mb *Mailbox) heardBeforeLocked(ctx context.Context, ids []uuid.UUID, op FlagOp) map[uuid.UUID]bool {
	if sourceOf(ctx) == nil || !setsHeard(op) {
		return nil
	}
	if op.Mode == FlagsAdd && op.Flags == FlagHeard && len(op.Keywords) == 0 {
		// Only \Seen is added: a message that changed was unheard.
		return map[uuid.UUID]bool{}
	}
	before := make(map[uuid.UUID]bool, len(ids))
	for _, id := range ids {
		m, err := mb.svc.store.Get(ctx, mb.name, id)
		if err != nil {
			continue // SetFlags reports it
		}
		before[id] = m.Heard()
	}
	return before
}

// noteFlagsLocked records the requests for \Seen a client made with one
// SetFlags of ids, forgets marks the change makes moot, and takes back a
// delete-time \Seen when the change also set \Deleted. It returns changed
// with the flags taken back applied, and the other messages whose \Seen it
// took back as a client's automatic display (commit them with
// commitDisplayFixLocked).
func (mb *Mailbox) noteFlagsLocked(ctx context.Context, ids []uuid.UUID, op FlagOp, heardBefore map[uuid.UUID]bool, changed []Message) (out, display []Message) {
	src, now := sourceOf(ctx), mb.svc.opts.Now()
	if src == nil && setsHeard(op) {
		// The phone played them: heard, whatever a client does next.
		for _, id := range ids {
			mb.svc.seen.drop(seenKey{mb.name, id})
		}
	}
	newly := make(map[uuid.UUID]bool)
	for _, m := range changed {
		if !m.Heard() {
			mb.svc.seen.drop(seenKey{mb.name, m.ID})
		} else if heardBefore != nil && !heardBefore[m.ID] {
			newly[m.ID] = true
		}
	}
	if src != nil && setsHeard(op) {
		seq := mb.svc.seen.next()
		for _, id := range ids {
			mb.svc.seen.set(seenKey{mb.name, id}, seenMark{source: src, at: now, seq: seq, newly: newly[id]})
		}
	}
	if setsDeleted(op) {
		return mb.takeBackSeenLocked(ctx, changed, func(i int) (uuid.UUID, bool) {
			return changed[i].ID, changed[i].Flags.Has(FlagDeleted)
		})
	}
	var shown []uuid.UUID
	for _, m := range changed {
		if newly[m.ID] && m.Folder == Inbox && !m.Flags.Has(FlagDeleted) {
			shown = append(shown, m.ID)
		}
	}
	if len(shown) > 0 && mb.svc.seen.deletedLately(mb.name, src, now) {
		// Displayed right after this client's habit delete: not played.
		for _, id := range shown {
			mb.svc.seen.drop(seenKey{mb.name, id})
		}
		display = mb.clearHeardLocked(ctx, shown)
	}
	return changed, display
}

// takeBackSeenLocked handles a client's delete of msgs (markOf names, for
// msgs[i], the message whose \Seen mark counts, itself or the original of a
// copy into Trash, and whether msgs[i] was just deleted). A delete is
// Thunderbird's habit when the client asked for \Seen on the messages it
// deletes just before (DeleteSeenWindow). Then the delete-time \Seen those
// requests set is cleared, as part of the caller's commit, and msgs are
// returned as they are then; and the \Seen the client set in between on
// other messages of INBOX, its display of the next message
// (AutoDisplayWindow), is cleared too and those messages are returned as
// display (commit them with commitDisplayFixLocked).
func (mb *Mailbox) takeBackSeenLocked(ctx context.Context, msgs []Message, markOf func(i int) (uuid.UUID, bool)) (out, display []Message) {
	src, now := sourceOf(ctx), mb.svc.opts.Now()
	var ids []uuid.UUID
	at := make(map[uuid.UUID]int)
	exclude := make(map[uuid.UUID]bool, len(msgs))
	habit, since := false, ^uint64(0)
	for i, m := range msgs {
		mark, deleted := markOf(i)
		// E-mail keeps plain IMAP semantics: only voicemail can be heard.
		if !deleted || m.Raw {
			continue
		}
		exclude[mark] = true
		v, ok := mb.svc.seen.take(seenKey{mb.name, mark}, src, now)
		if !ok {
			continue
		}
		habit, since = true, min(since, v.seq)
		if v.newly && m.Heard() {
			ids = append(ids, m.ID)
			at[m.ID] = i
		}
	}
	if !habit {
		return msgs, nil
	}
	var shown []uuid.UUID
	for _, id := range mb.svc.seen.displayed(mb.name, src, now, since, exclude) {
		if m, err := mb.svc.store.Get(ctx, mb.name, id); err == nil && !m.Raw && m.Folder == Inbox && m.Heard() && !m.Flags.Has(FlagDeleted) {
			shown = append(shown, id)
		}
	}
	display = mb.clearHeardLocked(ctx, shown)
	out = msgs
	if fixed := mb.clearHeardLocked(ctx, ids); len(fixed) > 0 {
		out = append([]Message(nil), msgs...)
		for _, m := range fixed {
			out[at[m.ID]] = m
		}
	}
	return out, display
}

// clearHeardLocked clears \Seen on ids and returns the messages as they are
// then. A failure leaves them heard, as they would be without the rules
// above, and is logged: the change it corrects is committed already.
func (mb *Mailbox) clearHeardLocked(ctx context.Context, ids []uuid.UUID) []Message {
	if len(ids) == 0 {
		return nil
	}
	fixed, err := mb.svc.store.SetFlags(ctx, mb.name, ids, FlagOp{Mode: FlagsRemove, Flags: FlagHeard})
	if err != nil {
		// The delete itself is committed; the message stays heard, as it
		// would without the rule.
		mb.svc.log.Error("um: take back a client's \\Seen", "mailbox", mb.name, "err", err)
		return nil
	}
	return fixed
}

// commitDisplayFixLocked publishes the \Seen taken back from messages a
// client displayed around its delete, to every subscriber, that client
// too: it set the flag and must learn that it is gone.
func (mb *Mailbox) commitDisplayFixLocked(ctx context.Context, display []Message) {
	if len(display) == 0 {
		return
	}
	events := make([]Event, len(display))
	for i, m := range display {
		events[i] = Event{Kind: EventFlags, Folder: m.Folder, Message: m.Clone()}
	}
	mb.svc.commit(context.WithValue(ctx, sourceKey{}, nil), mb.name, events)
}

// notVoiceError is the refusal of an e-mail offered to INBOX.
func (mb *Mailbox) notVoiceError(how string) error {
	return fmt.Errorf("um: %s INBOX of %q refused (%w): %s", how, mb.name, ErrNotVoice, InboxRefusal)
}

// returnedVoicemail reads the header of an e-mail offered to INBOX and
// returns the voicemail of this mailbox it is a rendering of. The
// X-Um-Message-Id header only names a candidate: it counts when the store
// holds a voicemail (not an appended e-mail) of that ID in this mailbox, so
// arbitrary content can never enter INBOX; what comes back is the stored
// voicemail, not the offered bytes.
func (mb *Mailbox) returnedVoicemail(ctx context.Context, how string, r io.Reader) (Message, error) {
	h, err := textproto.NewReader(bufio.NewReader(io.LimitReader(r, maxReturnHeader))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return Message{}, mb.notVoiceError(how)
	}
	vals := h.Values("X-Um-Message-Id")
	if len(vals) != 1 {
		return Message{}, mb.notVoiceError(how)
	}
	id, err := uuid.Parse(strings.TrimSpace(vals[0]))
	if err != nil {
		return Message{}, mb.notVoiceError(how)
	}
	m, err := mb.svc.store.Get(ctx, mb.name, id)
	if errors.Is(err, ErrNotFound) || (err == nil && m.Raw) {
		return Message{}, mb.notVoiceError(how)
	}
	if err != nil {
		return Message{}, fmt.Errorf("um: %s INBOX of %q: %w", how, mb.name, err)
	}
	return m, nil
}

// bringBack puts voicemail m back into INBOX with its ID, flags and heard
// state: from Trash as Undelete does, from a user folder by a move. One in
// INBOX already stays as it is (a voicemail is never in INBOX twice).
func (mb *Mailbox) bringBack(ctx context.Context, m Message) (Message, error) {
	switch m.Folder {
	case Inbox:
		return m, nil
	case Trash:
		return mb.Undelete(ctx, m.ID)
	}
	moved, err := mb.Move(ctx, []uuid.UUID{m.ID}, Inbox)
	if err != nil {
		return Message{}, err
	}
	return moved[0], nil
}

// appendToInbox is Append into INBOX: a mail client that moves a voicemail
// back from another account (Thunderbird's cross-account move is an APPEND
// here) gets the voicemail itself back; anything else is refused.
func (mb *Mailbox) appendToInbox(ctx context.Context, r io.Reader) (Message, error) {
	m, err := mb.returnedVoicemail(ctx, "append to", r)
	// The rest of the offered copy carries nothing um keeps.
	io.Copy(io.Discard, r)
	if err != nil {
		return Message{}, err
	}
	return mb.bringBack(ctx, m)
}

// returnToInbox is COPY or MOVE into INBOX of a list that holds e-mail
// (Raw). Each e-mail that is a copy of a voicemail of this mailbox brings
// that voicemail back, and a MOVE then removes the e-mail; the voicemail
// among ids are copied or moved as usual. Any other e-mail refuses the whole
// request before anything changes. The result is in the order of ids.
func (mb *Mailbox) returnToInbox(ctx context.Context, how string, ids []uuid.UUID, move bool) ([]Message, error) {
	voiceOf := make(map[int]uuid.UUID)
	var plain, copies []uuid.UUID
	var plainAt []int
	for i, id := range ids {
		m, err := mb.Message(ctx, id)
		if err != nil {
			return nil, err
		}
		if !m.Raw {
			plain, plainAt = append(plain, id), append(plainAt, i)
			continue
		}
		rc, err := mb.OpenAudio(ctx, id)
		if err != nil {
			return nil, err
		}
		v, err := mb.returnedVoicemail(ctx, how, rc)
		rc.Close()
		if err != nil {
			return nil, err
		}
		voiceOf[i], copies = v.ID, append(copies, id)
	}
	out := make([]Message, len(ids))
	if len(plain) > 0 {
		var done []Message
		var err error
		if move {
			done, err = mb.Move(ctx, plain, Inbox)
		} else {
			done, err = mb.Copy(ctx, plain, Inbox)
		}
		if err != nil {
			return nil, err
		}
		for j, m := range done {
			out[plainAt[j]] = m
		}
	}
	for i, id := range voiceOf {
		// Read again: an earlier entry may have brought it back already.
		v, err := mb.Message(ctx, id)
		if err != nil {
			return nil, err
		}
		if out[i], err = mb.bringBack(ctx, v); err != nil {
			return nil, err
		}
	}
	if move {
		if err := mb.purge(ctx, copies); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// hasRaw reports whether any of ids is an e-mail (Raw).
func (mb *Mailbox) hasRaw(ctx context.Context, ids []uuid.UUID) (bool, error) {
	for _, id := range ids {
		m, err := mb.Message(ctx, id)
		if err != nil {
			return false, err
		}
		if m.Raw {
			return true, nil
		}
	}
	return false, nil
}

// IsUrgent reports whether the message is urgent now: a voicemail with
// \Flagged. A caller's urgency at deposit sets \Flagged; a mail client that
// stars or unstars the message, or SetUrgent, changes it, and the phone and
// the lamp's urgent counts follow. (Message.Urgent keeps the caller's choice
// at deposit, which the rendered e-mail's Importance header shows and which
// never changes, since a message's bytes never do.)
func (m *Message) IsUrgent() bool { return !m.Raw && m.Flags.Has(FlagFlagged) }

// SetUrgent makes voicemail urgent or not, as the phone sees it and as mail
// clients show it (\Flagged, a star in most), and returns the messages that
// changed.
func (mb *Mailbox) SetUrgent(ctx context.Context, urgent bool, ids ...uuid.UUID) ([]Message, error) {
	op := FlagOp{Mode: FlagsAdd, Flags: FlagFlagged}
	if !urgent {
		op.Mode = FlagsRemove
	}
	return mb.SetFlags(ctx, ids, op)
}
