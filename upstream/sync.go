package upstream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/google/uuid"
)

// ErrServerFault is wrapped by the errors of sessions the engine ended
// because the server sent what it refuses to act on: a line, literal or
// answer over the limits, a UIDVALIDITY of 0 or one that changes within a
// session, answers that contradict each other or leave out what was
// asked, data after BYE, or a command not answered in time. Nothing is changed on an answer like that; the worker
// backs off as after any failure and Status shows the error.
var ErrServerFault = errors.New("upstream: server fault")

// observe learns what the server holds of this mailbox's voicemail. full
// searches the folder by header; otherwise only the associated copies are
// fetched (with CONDSTORE only those changed since the last sync unless
// something was expunged), and a copy missing from that answer makes it a
// full observation. Either way a UID of the state is reported gone only
// when the server confirmed it (confirmGone).
func (w *worker) observe(c *imapclient.Client, full, condstore bool) (observation, uint64, error) {
	ob := observation{copies: make(map[uuid.UUID][]upMsg), gone: make(map[imap.UID]bool), leftovers: !w.uidPlus()}
	var modseq uint64
	if condstore {
		w.arm()
		sd, err := c.Status(w.cfg.Folder, &imap.StatusOptions{HighestModSeq: true}).Wait()
		if err != nil {
			return ob, 0, fmt.Errorf("upstream: STATUS: %w", err)
		}
		modseq = sd.HighestModSeq
	}
	byUID := make(map[imap.UID]uuid.UUID)
	for id, m := range w.st.Messages {
		if m.UID != 0 && !m.Removed && !m.Appending {
			byUID[imap.UID(m.UID)] = id
		}
	}
	expunged := w.upExpunge.Swap(false)
	arrived := w.upExists.Swap(false)
	if !full {
		if arrived {
			if err := w.observeArrivals(c, &ob, byUID); err != nil {
				return ob, 0, err
			}
		}
		if len(byUID) == 0 {
			return ob, modseq, nil
		}
		changedSince := condstore && !expunged && w.st.HighestModSeq > 0
		var since uint64
		if changedSince {
			since = w.st.HighestModSeq
		}
		got, err := w.fetchUIDs(c, slices.Collect(maps.Keys(byUID)), nil, since)
		if err != nil {
			return ob, 0, err
		}
		seen := make(map[imap.UID]bool, len(got))
		for _, f := range got {
			id := byUID[f.uid]
			seen[f.uid] = true
			ob.copies[id] = append(ob.copies[id], upMsg{uid: f.uid, flags: f.flags})
		}
		for uid, id := range byUID {
			if seen[uid] {
				continue
			}
			if !changedSince {
				// Gone, or the answer was short: the header search and a
				// confirmation tell which.
				return w.observe(c, true, condstore)
			}
			ob.copies[id] = append(ob.copies[id], upMsg{uid: uid, flags: w.st.Messages[id].Flags})
		}
		sortCopies(ob.copies)
		return ob, modseq, nil
	}

	ob.complete = true
	uids, err := w.search(c, &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: IDHeader, Value: ""}}})
	if err != nil {
		return ob, 0, err
	}
	var shown imap.UID // a message the server showed to be there
	if len(uids) > 0 {
		got, err := w.fetchUIDs(c, uids, idSection(), 0)
		if err != nil {
			return ob, 0, err
		}
		for _, f := range got {
			shown = max(shown, f.uid)
			if id, ok := parseIDHeader(f.header); ok {
				ob.copies[id] = append(ob.copies[id], upMsg{uid: f.uid, flags: f.flags})
			}
		}
	}
	var missing []imap.UID
	for uid, id := range byUID {
		if !slices.ContainsFunc(ob.copies[id], func(u upMsg) bool { return u.uid == uid }) {
			missing = append(missing, uid)
		}
	}
	if len(missing) > 0 {
		present, err := w.confirmGone(c, missing, shown)
		if err != nil {
			return ob, 0, err
		}
		for _, uid := range missing {
			if f, ok := present[uid]; ok {
				// The search missed a copy a fetch shows: trust the copy.
				id := byUID[uid]
				ob.copies[id] = append(ob.copies[id], upMsg{uid: uid, flags: f})
			} else {
				ob.gone[uid] = true
			}
		}
	}
	sortCopies(ob.copies)
	return ob, modseq, nil
}

// sortCopies puts each voicemail's copies oldest first.
func sortCopies(copies map[uuid.UUID][]upMsg) {
	for _, v := range copies {
		slices.SortFunc(v, func(a, b upMsg) int { return cmp.Compare(a.uid, b.uid) })
	}
}

// observeArrivals looks for copies among the mail that arrived since the
// newest copy the state knows: a copy the user brought back from Trash or
// another folder, which the fetch of known UIDs cannot see (delete wins,
// and a second copy is a duplicate). It searches by header only the UIDs
// above that copy's, so the user's other mail costs the server little.
func (w *worker) observeArrivals(c *imapclient.Client, ob *observation, byUID map[imap.UID]uuid.UUID) error {
	var top imap.UID
	for uid := range byUID {
		top = max(top, uid)
	}
	if top == math.MaxUint32 {
		return nil // nothing arrives above it (a state older than the checks of APPENDUID)
	}
	var above imap.UIDSet
	above.AddRange(top+1, 0) // "top+1:*"; a truthful server answers the last message at least
	uids, err := w.search(c, &imap.SearchCriteria{UID: []imap.UIDSet{above},
		Header: []imap.SearchCriteriaHeaderField{{Key: IDHeader, Value: ""}}})
	if err != nil {
		return err
	}
	uids = slices.DeleteFunc(uids, func(u imap.UID) bool { _, ok := byUID[u]; return ok })
	if len(uids) == 0 {
		return nil
	}
	got, err := w.fetchUIDs(c, uids, idSection(), 0)
	if err != nil {
		return err
	}
	for _, f := range got {
		if id, ok := parseIDHeader(f.header); ok {
			ob.copies[id] = append(ob.copies[id], upMsg{uid: f.uid, flags: f.flags})
		}
	}
	return nil
}

// idSection is the header field that names a copy's voicemail, fetched
// without setting \Seen.
func idSection() *imap.FetchItemBodySection {
	return &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{IDHeader}, Peek: true}
}

// confirmGone asks the server about UIDs a search did not find. The
// question also names a message the server just showed (shown, from the
// fetch of the search's results), or else the folder's last message (whose
// UID a FETCH by sequence number tells, a round trip more), so every
// truthful answer about a folder that holds anything is non-empty: an
// answer without that message is a contradiction, never a confirmation.
// It returns the flags of the UIDs that are still there.
func (w *worker) confirmGone(c *imapclient.Client, uids []imap.UID, shown imap.UID) (map[imap.UID]um.Flags, error) {
	mbox := c.Mailbox()
	if mbox == nil {
		return nil, fmt.Errorf("%w: no folder selected", ErrServerFault)
	}
	ask := slices.Clone(uids)
	last := shown
	if last != 0 {
		ask = append(ask, last)
	} else if n := mbox.NumMessages; n > 0 {
		w.arm()
		bufs, err := c.Fetch(imap.SeqSetNum(n), &imap.FetchOptions{UID: true}).Collect()
		if err != nil {
			return nil, fmt.Errorf("upstream: FETCH: %w", err)
		}
		if len(bufs) != 1 || bufs[0].UID == 0 {
			return nil, fmt.Errorf("%w: no UID for message %d of %d", ErrServerFault, n, n)
		}
		last = bufs[0].UID
		ask = append(ask, last)
	}
	got, err := w.fetchUIDs(c, ask, nil, 0)
	if err != nil {
		return nil, err
	}
	present := make(map[imap.UID]um.Flags)
	sawLast := false
	for _, f := range got {
		sawLast = sawLast || f.uid == last
		if slices.Contains(uids, f.uid) {
			present[f.uid] = f.flags
		}
	}
	if last != 0 && !sawLast {
		return nil, fmt.Errorf("%w: UID FETCH of %d missing copies left out message %d, which is there", ErrServerFault, len(uids), last)
	}
	return present, nil
}

// needsFull tells whether the state has entries only a header search can
// settle: an APPEND whose outcome is unknown, a copy to find again, or a
// voicemail removed before that is back in INBOX (a copy of it may be in
// the folder, marked \Deleted or brought back by the user: then it is
// not restored from Trash, nor uploaded again).
func needsFull(st *State, local map[uuid.UUID]localMsg) bool {
	for id, e := range st.Messages {
		if e.Appending || e.UID == 0 && local[id].where == inInbox {
			return true
		}
	}
	return false
}

// pass makes both sides equal: it observes both, decides, and executes.
// full rebuilds the server side from the id headers; localOnly, when the
// server announced no change while idling, takes the server's side as the
// state has it and asks the server nothing.
func (w *worker) pass(ctx context.Context, c *imapclient.Client, full, condstore, localOnly bool) error {
	msgs, err := w.mb.List(ctx, um.Inbox)
	if err != nil {
		return err
	}
	local := make(map[uuid.UUID]localMsg, len(msgs))
	for _, m := range msgs {
		if !m.Raw {
			local[m.ID] = localMsg{where: inInbox, flags: m.Flags & syncMask}
		}
	}
	full = full || w.again || needsFull(w.st, local)
	w.again = false
	var ob observation
	var modseq uint64
	if localOnly && !full {
		ob = observation{copies: make(map[uuid.UUID][]upMsg), gone: make(map[imap.UID]bool)}
		for id, e := range w.st.Messages {
			if e.UID != 0 && !e.Removed && !e.Appending {
				ob.copies[id] = []upMsg{{uid: imap.UID(e.UID), flags: e.Flags}}
			}
		}
	} else if ob, modseq, err = w.observe(c, full, condstore); err != nil {
		return err
	}
	// Where are the voicemails the state or the server knows and INBOX
	// does not hold?
	lookup := func(id uuid.UUID) error {
		if _, ok := local[id]; ok {
			return nil
		}
		m, err := w.mb.Message(ctx, id)
		switch {
		case errors.Is(err, um.ErrNotFound):
			local[id] = localMsg{where: absent}
		case err != nil:
			return err
		case m.Folder == um.Inbox && !m.Raw:
			local[id] = localMsg{where: inInbox, flags: m.Flags & syncMask}
		default:
			local[id] = localMsg{where: elsewhere, flags: m.Flags & syncMask}
		}
		return nil
	}
	for id := range w.st.Messages {
		if err := lookup(id); err != nil {
			return err
		}
	}
	for id := range ob.copies {
		if err := lookup(id); err != nil {
			return err
		}
	}
	if err := w.g.fault(); err != nil {
		return err // nothing said after BYE or past a limit is acted on
	}
	// The user's MOVE of a copy the engine moved too can be committed after
	// the engine's look into Trash (Dovecot makes it wait for Trash's lock,
	// then copies a message already expunged): a full pass looks again at
	// what earlier passes moved.
	var recheck []uuid.UUID
	if full {
		for id := range w.trashed {
			if local[id].where != inInbox {
				recheck = append(recheck, id)
			}
		}
		w.trashed = nil
	}
	acts, next := decide(local, w.st.Messages, ob)
	err = w.execute(ctx, c, acts, next, modseq)
	if err == nil {
		err = w.dedupTrash(c, recheck)
	}
	if err != nil && len(recheck) > 0 {
		w.noteTrashed(recheck) // for the next full pass
	}
	return err
}

// noteTrashed remembers voicemails moved to Trash for the next full pass
// to look at again.
func (w *worker) noteTrashed(ids []uuid.UUID) {
	if w.trashed == nil {
		w.trashed = make(map[uuid.UUID]bool)
	}
	for _, id := range ids {
		if len(w.trashed) < maxRecheck {
			w.trashed[id] = true
		}
	}
}

// execute carries out the actions of decide, then saves next. Flags and
// deletions go first, then restores, then uploads: the state with the
// uploads marked Appending is saved before the first APPEND, so a lost
// answer leads to a search, not a second copy. On an error the state saved
// last stays, and the next pass works out again what is left.
func (w *worker) execute(ctx context.Context, c *imapclient.Client, acts []action, next map[uuid.UUID]MessageState, modseq uint64) error {
	wctx := um.WithSource(ctx, w)
	var umDelete []uuid.UUID
	var upDelete, dups []imap.UID
	var restores, appends, clears []uuid.UUID
	var stores []*imapclient.FetchCommand
	again := make(map[uuid.UUID][]imap.UID)
	removing := make(map[uuid.UUID]bool)
	defer func() {
		for _, s := range stores {
			s.Close() // on an early return; a no-op once waited for
		}
	}()
	for _, a := range acts {
		switch a.kind {
		case actSetLocal:
			op := um.FlagOp{Mode: um.FlagsAdd, Flags: a.add}
			if a.del != 0 {
				op = um.FlagOp{Mode: um.FlagsRemove, Flags: a.del}
			}
			if _, err := w.mb.SetFlags(wctx, []uuid.UUID{a.id}, op); err != nil && !errors.Is(err, um.ErrNotFound) {
				return err
			}
		case actStore:
			// Sent now, answers read below: one round trip for all.
			set := imap.UIDSetNum(a.uid)
			for _, f := range []struct {
				op    imap.StoreFlagsOp
				flags um.Flags
			}{{imap.StoreFlagsAdd, a.add}, {imap.StoreFlagsDel, a.del}} {
				if f.flags != 0 {
					stores = append(stores, c.Store(set, &imap.StoreFlags{Op: f.op, Silent: true, Flags: toIMAP(f.flags)}, nil))
					if w.e.sequential {
						if err := stores[len(stores)-1].Close(); err != nil {
							return fmt.Errorf("upstream: UID STORE: %w", err)
						}
					}
				}
			}
		case actDeleteLocal:
			umDelete = append(umDelete, a.id)
		case actDeleteUp:
			if a.again {
				again[a.id] = append(again[a.id], a.uid)
			} else {
				upDelete = append(upDelete, a.uid)
				removing[a.id] = true
			}
		case actDropDup:
			dups = append(dups, a.uid)
		case actRestore:
			restores = append(restores, a.id)
		case actAppend:
			appends = append(appends, a.id)
		case actClearTrash:
			clears = append(clears, a.id)
		}
	}
	if len(stores) > 0 {
		w.arm()
		for _, s := range stores {
			if err := s.Close(); err != nil {
				return fmt.Errorf("upstream: UID STORE: %w", err)
			}
		}
		stores = nil
	}
	for _, id := range umDelete {
		// To um's Trash with Move, never Delete: Delete purges a voicemail
		// the phone moved to Trash between any look at it and the act, and
		// the user's delete upstream stays recoverable on the phone. One at
		// a time, so one the phone purged meanwhile keeps none back.
		if m, err := w.mb.Message(ctx, id); err != nil || m.Folder != um.Inbox {
			continue
		}
		if _, err := w.mb.Move(wctx, []uuid.UUID{id}, um.Trash); err != nil && !errors.Is(err, um.ErrNotFound) {
			return err
		}
	}
	// The voicemails whose copies go to Trash now.
	trashed := maps.Clone(removing)
	if len(again) > 0 {
		// Copies of voicemail removed before: where Trash has one already,
		// this one is a leftover (a move cut short) and is expunged.
		dup, err := w.inTrash(c, slices.Collect(maps.Keys(again)))
		if err != nil {
			return err
		}
		var left []imap.UID
		for id, uids := range again {
			if dup[id] {
				left = append(left, uids...)
			} else {
				upDelete = append(upDelete, uids...)
				trashed[id] = true
			}
		}
		if len(left) > 0 {
			// Never into Trash again, even where only \Deleted is possible.
			if err := w.expungeUIDs(c, imap.UIDSetNum(left...)); err != nil {
				return err
			}
		}
	}
	if len(removing) > 0 {
		// Remembered as removed before the move: a move a crash cuts short
		// (a copy left in both folders) is then known for one.
		st := w.st.clone()
		for id := range removing {
			st.Messages[id] = next[id]
		}
		if err := w.e.state.Save(ctx, w.cfg.Mailbox, st); err != nil {
			return err
		}
		w.st = st
	}
	if len(upDelete) > 0 {
		if err := w.deleteUpstream(c, upDelete, true); err != nil {
			return err
		}
		if w.hasTrash() {
			w.noteTrashed(slices.Collect(maps.Keys(trashed)))
			// Neither COPY nor every server's MOVE is atomic with the
			// user's own delete at the same moment: both may have put a
			// copy in Trash.
			if err := w.dedupTrash(c, slices.Collect(maps.Keys(trashed))); err != nil {
				return err
			}
		}
	}
	if len(dups) > 0 {
		if err := w.deleteUpstream(c, dups, false); err != nil {
			return err
		}
	}
	if len(clears) > 0 {
		if err := w.clearTrash(c, clears); err != nil {
			return err
		}
	}
	for _, id := range restores {
		uid, ok, err := w.restore(c, id)
		if err != nil {
			return err
		}
		if ok {
			w.again = true // the next pass looks at the copy by its header
			if uid != 0 {
				next[id] = MessageState{UID: uint32(uid), Flags: next[id].Flags}
			}
			continue
		}
		next[id] = MessageState{Flags: next[id].Flags, Appending: true}
		appends = append(appends, id)
	}
	st := &State{UIDValidity: w.st.UIDValidity, HighestModSeq: w.st.HighestModSeq, Messages: next}
	if modseq != 0 {
		st.HighestModSeq = modseq
	}
	// An upload tried already waits a backoff period, doubling with each
	// try, before the next, so a server that hides copies cannot make a
	// stream of them (sessions that sync reset the worker's own backoff).
	var tooSoon error
	appends = slices.DeleteFunc(appends, func(id uuid.UUID) bool {
		if t, ok := w.appended[id]; ok && time.Since(t.at) < t.wait(&w.e.opts) {
			if old, ok := w.st.Messages[id]; ok {
				next[id] = old
			} else {
				delete(next, id)
			}
			tooSoon = fmt.Errorf("%w: copy of %s not found after its APPEND; retrying after the backoff", ErrServerFault, id)
			return true
		}
		return false
	})
	if !maps.Equal(st.Messages, w.st.Messages) || st.HighestModSeq != w.st.HighestModSeq {
		if err := w.e.state.Save(ctx, w.cfg.Mailbox, st); err != nil {
			return err
		}
	}
	w.st = st
	if len(appends) == 0 {
		return tooSoon
	}
	// The uploads go out back to back (with LITERAL+ nothing waits for
	// the server in between); their answers are read after, in order.
	var sent []*sentAppend
	var firstErr error
	for _, id := range appends {
		a, err := w.sendAppend(ctx, c, id)
		if err != nil {
			firstErr = err
			break
		}
		if a != nil && w.e.sequential {
			if err := w.finishAppend(c, a); err != nil {
				firstErr = err
				break
			}
		} else if a != nil {
			sent = append(sent, a)
		}
	}
	for _, a := range sent {
		if err := w.finishAppend(c, a); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if err := w.e.state.Save(ctx, w.cfg.Mailbox, w.st); err != nil {
		return err
	}
	if firstErr != nil {
		return firstErr
	}
	return tooSoon
}

// sentAppend is an APPEND sent whose answer is still to be read.
type sentAppend struct {
	id    uuid.UUID
	flags um.Flags
	cmd   *imapclient.AppendCommand
	err   error // of writing it
}

// sendAppend sends the APPEND of one voicemail, whose state entry is saved
// with Appending set. It returns nil for a voicemail purged meanwhile.
func (w *worker) sendAppend(ctx context.Context, c *imapclient.Client, id uuid.UUID) (*sentAppend, error) {
	m, err := w.mb.Message(ctx, id)
	if errors.Is(err, um.ErrNotFound) {
		return nil, nil // the next pass drops the entry
	}
	if err != nil {
		return nil, err
	}
	audio, err := w.mb.OpenAudio(ctx, m.ID)
	if err != nil {
		return nil, err
	}
	defer audio.Close()
	a := &sentAppend{id: id, flags: w.st.Messages[id].Flags}
	email := w.e.svc.RenderEmail(m, w.rend)
	w.appended[id] = appendTry{at: time.Now(), n: w.appended[id].n + 1}
	w.arm()
	w.echoExists.Add(1)
	if w.g != nil {
		// One round trip, not two, where the server allows (literal.go).
		w.g.plus.Store(w.caps.Has(imap.CapLiteralPlus))
	}
	a.cmd = c.Append(w.cfg.Folder, email.Size(), &imap.AppendOptions{Flags: toIMAP(a.flags), Time: m.Time})
	if w.g != nil {
		w.g.plus.Store(false)
	}
	_, werr := email.WriteTo(a.cmd, audio)
	a.err = errors.Join(werr, a.cmd.Close())
	return a, nil
}

// finishAppend reads the answer to an APPEND and records the copy's UID.
func (w *worker) finishAppend(c *imapclient.Client, a *sentAppend) error {
	w.arm()
	data, err := a.cmd.Wait()
	if err = errors.Join(a.err, err); err != nil {
		return fmt.Errorf("upstream: APPEND %s: %w", a.id, err)
	}
	id, flags := a.id, a.flags
	if w.e.afterAppend != nil && w.e.afterAppend() {
		w.g.Close() // the session's end waits for the reader
		return errors.New("upstream: APPEND answer lost (test)")
	}
	// An APPENDUID names the copy from then on: a UID no folder reaches
	// (4294967295 would also make the search for arrivals above it ask
	// for "0:*"), 0, or one of another UIDVALIDITY names no copy of ours.
	if data.UID != 0 || data.UIDValidity != 0 {
		if data.UIDValidity != w.st.UIDValidity {
			return fmt.Errorf("%w: APPEND answered UIDVALIDITY %d, the folder has %d", ErrServerFault, data.UIDValidity, w.st.UIDValidity)
		}
		if data.UID == 0 || data.UID == math.MaxUint32 {
			return fmt.Errorf("%w: APPEND answered UID %d", ErrServerFault, data.UID)
		}
	}
	uid := data.UID
	if uid == 0 {
		// No UIDPLUS: find the copy by its header.
		uids, err := w.searchID(c, id)
		if err != nil {
			return err
		}
		if len(uids) == 0 {
			return fmt.Errorf("%w: APPEND %s: the copy is not found after it", ErrServerFault, id)
		}
		uid = uids[0]
	}
	w.st.Messages[id] = MessageState{UID: uint32(uid), Flags: flags}
	return nil
}

// searchID finds the copies of one message by its header in the selected
// folder.
func (w *worker) searchID(c *imapclient.Client, id uuid.UUID) ([]imap.UID, error) {
	return w.search(c, &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: IDHeader, Value: id.String()}}})
}

// searchLive finds the copies of one message in the selected folder that
// are not marked \Deleted. In Trash those are the ones that count: a
// server without UIDPLUS keeps the copies the engine marked \Deleted
// until a client expunges them, and a copy of one of those carries the
// flag along.
func (w *worker) searchLive(c *imapclient.Client, id uuid.UUID) ([]imap.UID, error) {
	return w.search(c, liveCriteria(id))
}

func liveCriteria(id uuid.UUID) *imap.SearchCriteria {
	return &imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: IDHeader, Value: id.String()}},
		NotFlag: []imap.Flag{imap.FlagDeleted}}
}

// hasTrash tells whether deleted copies go to a Trash folder.
func (w *worker) hasTrash() bool {
	return w.trash != "" && !strings.EqualFold(w.trash, w.cfg.Folder)
}

func (w *worker) canMove() bool { return w.caps.Has(imap.CapMove) || w.caps.Has(imap.CapIMAP4rev2) }
func (w *worker) uidPlus() bool { return w.caps.Has(imap.CapUIDPlus) || w.caps.Has(imap.CapIMAP4rev2) }
func (w *worker) reselect(c *imapclient.Client) error {
	return w.selectFolder(w.ctx, c, w.condstore, true)
}

// deleteUpstream removes copies the way a mail client would: a move to
// Trash (toTrash), or \Deleted and a UID EXPUNGE of exactly these UIDs.
// Never a bare EXPUNGE: the folder may hold the user's other mail marked
// \Deleted. Duplicates (toTrash false) are expunged where UIDPLUS allows,
// so the user's Trash gets no copy of a voicemail that is still there.
func (w *worker) deleteUpstream(c *imapclient.Client, uids []imap.UID, toTrash bool) error {
	set := imap.UIDSetNum(uids...)
	if w.hasTrash() && (toTrash || !w.uidPlus()) {
		w.arm()
		if w.canMove() {
			w.echoExpunge.Add(int64(len(uids)))
			if _, err := c.Move(set, w.trash).Wait(); err != nil {
				if expungeIssued(err) {
					// The user removed some of them meanwhile: the next
					// pass looks at the whole folder again.
					w.again = true
					return nil
				}
				return fmt.Errorf("upstream: UID MOVE to %q: %w", w.trash, err)
			}
			return nil
		}
		if _, err := c.Copy(set, w.trash).Wait(); err != nil {
			return fmt.Errorf("upstream: UID COPY to %q: %w", w.trash, err)
		}
	}
	return w.expungeUIDs(c, set)
}

// expungeUIDs marks the UIDs \Deleted and, with UIDPLUS, expunges them
// alone.
func (w *worker) expungeUIDs(c *imapclient.Client, set imap.UIDSet) error {
	w.arm()
	if err := c.Store(set, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		return fmt.Errorf("upstream: UID STORE: %w", err)
	}
	if w.uidPlus() {
		w.arm()
		w.echoExpunge.Add(int64(uidCount(set)))
		if err := c.UIDExpunge(set).Close(); err != nil {
			return fmt.Errorf("upstream: UID EXPUNGE: %w", err)
		}
	}
	return nil
}

// trashLive finds the live copies of each voicemail in the server's Trash
// in one round trip: the EXAMINE of Trash, a search per voicemail and the
// folder's SELECT go out back to back. A Trash that cannot be selected
// holds nothing. validity is Trash's UIDVALIDITY, which the UIDs found
// belong to.
func (w *worker) trashLive(c *imapclient.Client, ids []uuid.UUID) (found map[uuid.UUID][]imap.UID, validity uint32, err error) {
	found = make(map[uuid.UUID][]imap.UID)
	if !w.hasTrash() || len(ids) == 0 {
		return found, 0, nil
	}
	m := w.markFolder(c)
	sel := c.Select(w.trash, &imap.SelectOptions{ReadOnly: true})
	searches := make([]*imapclient.SearchCommand, len(ids))
	for i, id := range ids {
		searches[i] = c.UIDSearch(liveCriteria(id), nil)
	}
	if err := w.reselect(c); err != nil {
		return nil, 0, err
	}
	sd, err := sel.Wait()
	if err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) {
			return found, 0, nil // no Trash after all: the searches failed too
		}
		return nil, 0, fmt.Errorf("upstream: examine %q: %w", w.trash, err)
	}
	inTrash := sd.NumMessages // the client's view is of the folder again
	for i, s := range searches {
		sd, err := s.Wait()
		if err != nil {
			return nil, 0, fmt.Errorf("upstream: UID SEARCH in %q: %w", w.trash, err)
		}
		uids, err := serverUIDs(sd.All, w.matchable(m, inTrash), "UID SEARCH")
		if err != nil {
			return nil, 0, err
		}
		if len(uids) > 0 {
			slices.Sort(uids)
			found[ids[i]] = uids
		}
	}
	return found, sd.UIDValidity, nil
}

// inTrash tells which of the voicemails have a copy in the server's Trash.
func (w *worker) inTrash(c *imapclient.Client, ids []uuid.UUID) (map[uuid.UUID]bool, error) {
	live, _, err := w.trashLive(c, ids)
	found := make(map[uuid.UUID]bool, len(live))
	for id := range live {
		found[id] = true
	}
	return found, err
}

// dedupTrash leaves one live copy of each voicemail in the server's Trash,
// marking the others \Deleted (and expunging them where UIDPLUS allows).
// Second copies come from the user's delete at the moment of the
// engine's: two COPYs, or two MOVEs where the server's MOVE is a copy and
// an expunge (Dovecot's). Looking costs one round trip.
func (w *worker) dedupTrash(c *imapclient.Client, ids []uuid.UUID) error {
	live, validity, err := w.trashLive(c, ids)
	if err != nil {
		return err
	}
	var extra []imap.UID
	for _, uids := range live {
		extra = append(extra, uids[1:]...)
	}
	return w.inTrashFolder(c, extra, validity)
}

// clearTrash removes the live copies of voicemail that is back in the
// folder from the server's Trash: expunged where UIDPLUS allows, else
// marked \Deleted.
func (w *worker) clearTrash(c *imapclient.Client, ids []uuid.UUID) error {
	live, validity, err := w.trashLive(c, ids)
	if err != nil {
		return err
	}
	var uids []imap.UID
	for _, u := range live {
		uids = append(uids, u...)
	}
	return w.inTrashFolder(c, uids, validity)
}

// inTrashFolder removes copies from the server's Trash (expunged where
// UIDPLUS allows, else marked \Deleted) and selects the folder again.
// The UIDs were found under Trash's UIDVALIDITY validity: under another
// one (Trash was deleted and created again since) they name other mail,
// and nothing is removed.
func (w *worker) inTrashFolder(c *imapclient.Client, uids []imap.UID, validity uint32) error {
	if len(uids) == 0 {
		return nil
	}
	w.arm()
	sel, err := c.Select(w.trash, nil).Wait()
	if err != nil {
		return fmt.Errorf("upstream: select %q: %w", w.trash, err)
	}
	if sel.UIDValidity == 0 || sel.UIDValidity != validity {
		return fmt.Errorf("%w: UIDVALIDITY of %q was %d when its copies were found, is %d now", ErrServerFault, w.trash, validity, sel.UIDValidity)
	}
	if err := w.expungeUIDs(c, imap.UIDSetNum(uids...)); err != nil {
		return err
	}
	return w.reselect(c)
}

// restore brings the copy of a voicemail undeleted on the phone back from
// the server's Trash into the folder, and removes any further copy of it
// from Trash. It reports false when Trash holds no live copy: one marked
// \Deleted is on its way out, and a copy of it would be too. uid is the
// copy's UID in the folder, from COPYUID or a search after it (0 when
// neither tells): a copy the user removes again before the next pass is
// then known gone, not taken for one never uploaded.
func (w *worker) restore(c *imapclient.Client, id uuid.UUID) (uid imap.UID, ok bool, err error) {
	if !w.hasTrash() {
		return 0, false, nil
	}
	w.arm()
	if _, err := c.Select(w.trash, nil).Wait(); err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) {
			return 0, false, w.reselect(c) // no Trash after all
		}
		return 0, false, fmt.Errorf("upstream: select %q: %w", w.trash, err)
	}
	uids, err := w.searchLive(c, id)
	if err != nil {
		return 0, false, err
	}
	if len(uids) == 0 {
		return 0, false, w.reselect(c)
	}
	slices.Sort(uids)
	set := imap.UIDSetNum(uids[0])
	w.arm()
	if w.canMove() {
		md, err := c.Move(set, w.cfg.Folder).Wait()
		if expungeIssued(err) {
			// The user restored or purged it meanwhile: the next pass, a
			// full one, finds the copy or uploads the voicemail once.
			return 0, true, w.reselect(c)
		}
		if err != nil {
			return 0, false, fmt.Errorf("upstream: UID MOVE to %q: %w", w.cfg.Folder, err)
		}
		if uid, err = w.copiedUID(md.UIDValidity, md.DestUIDs); err != nil {
			return 0, false, err
		}
	} else {
		cd, err := c.Copy(set, w.cfg.Folder).Wait()
		if expungeIssued(err) {
			return 0, true, w.reselect(c)
		}
		if err != nil {
			return 0, false, fmt.Errorf("upstream: UID COPY to %q: %w", w.cfg.Folder, err)
		}
		if uid, err = w.copiedUID(cd.UIDValidity, cd.DestUIDs); err != nil {
			return 0, false, err
		}
		if err := w.expungeUIDs(c, set); err != nil {
			return 0, false, err
		}
	}
	if len(uids) > 1 {
		if err := w.expungeUIDs(c, imap.UIDSetNum(uids[1:]...)); err != nil {
			return 0, false, err
		}
	}
	if err := w.reselect(c); err != nil {
		return 0, false, err
	}
	if uid == 0 {
		found, err := w.searchLive(c, id)
		if err != nil {
			return 0, false, err
		}
		if len(found) == 1 {
			uid = found[0]
		}
	}
	return uid, true, nil
}

// copiedUID is the one UID a COPYUID names in the folder, or 0 when it
// names none of this UIDVALIDITY. One copy has one UID: a set of more, or
// with a UID no folder reaches, is a server fault.
func (w *worker) copiedUID(validity uint32, dest imap.NumSet) (imap.UID, error) {
	if dest == nil || validity == 0 || validity != w.st.UIDValidity {
		return 0, nil
	}
	uids, err := serverUIDs(dest, 1, "COPYUID")
	if err != nil || len(uids) == 0 {
		return 0, err
	}
	return uids[0], nil
}

// maxRecheck bounds how many voicemails moved to Trash the next full pass
// looks for again.
const maxRecheck = 1000

// expungeIssued tells whether a command failed because messages it named
// were expunged by another client meanwhile (RFC 9051's EXPUNGEISSUED).
func expungeIssued(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo && ie.Code == "EXPUNGEISSUED"
}

func uidCount(set imap.UIDSet) int {
	n := 0
	for _, r := range set {
		n += int(r.Stop-r.Start) + 1
	}
	return n
}
