package upstream

import (
	"bytes"
	"slices"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// where says where a voicemail is in the um store.
type where uint8

const (
	absent    where = iota // not in the store: purged, or never this mailbox's
	inInbox                // in the voice mailbox's INBOX: it must have a copy
	elsewhere              // in um's Trash or another folder: deleted on the phone
)

// localMsg is what the um store holds of one voicemail.
type localMsg struct {
	where where
	flags um.Flags
}

// upMsg is what the server holds of one voicemail.
type upMsg struct {
	uid   imap.UID
	flags um.Flags
}

// observation is what a pass learned from the server. Every UID the state
// associates (and has not marked removed) is either among copies or in
// gone, or the pass knows nothing about it and leaves it alone.
type observation struct {
	// copies are the copies of each voicemail in the folder, oldest first.
	copies map[uuid.UUID][]upMsg
	// complete says copies lists every copy of ours in the folder (a header
	// SEARCH was made); otherwise it holds the associated copies only.
	complete bool
	// gone holds UIDs of the state whose removal from the folder the server
	// confirmed under the state's UIDVALIDITY.
	gone map[imap.UID]bool
	// leftovers says copies marked \Deleted may be the engine's own, left
	// in the folder by its deletes on a server without UID EXPUNGE.
	leftovers bool
}

type actionKind uint8

const (
	actSetLocal    actionKind = iota // change the voicemail's flags in um (add, del)
	actStore                         // change the copy's flags upstream (uid, add, del)
	actDeleteLocal                   // delete the voicemail on the phone (to um's Trash)
	actDeleteUp                      // delete the copy upstream (to the server's Trash)
	actDropDup                       // remove a duplicate copy
	actRestore                       // bring the Trash copy back to the folder, else append
	actAppend                        // upload the voicemail
	actClearTrash                    // remove the voicemail's copies from the server's Trash
)

// action is one step the executor takes to make both sides equal.
type action struct {
	kind     actionKind
	id       uuid.UUID
	uid      imap.UID
	add, del um.Flags
	// again marks an actDeleteUp of a voicemail removed before: its copy
	// is expunged, not moved, when the server's Trash holds one already.
	again bool
}

// pickKeep chooses the copy to keep of several: the state's, else the
// oldest, preferring copies not marked \Deleted (a server without UID
// EXPUNGE keeps those until a client expunges them).
func pickKeep(ups []upMsg, e MessageState, has bool) upMsg {
	var keep upMsg
	best := -1
	for _, u := range ups {
		rank := 0
		if u.flags&um.FlagDeleted == 0 {
			rank += 2
		}
		if has && uint32(u.uid) == e.UID {
			rank++
		}
		if rank > best {
			keep, best = u, rank
		}
	}
	return keep
}

// decide compares the um store, the saved state and the server, and
// returns the actions that make both sides equal and the state to save once
// they are done. It does no I/O. The rules, in the order they apply:
//
//   - A voicemail in um's INBOX whose associated copy the server confirmed
//     gone (expunged, trashed, filed by the user) is deleted on the phone
//     and remembered as removed; a copy merely not seen is left alone.
//   - A voicemail remembered as removed is never uploaded as new: when the
//     phone undeletes it, its copy is restored from the server's Trash (or,
//     when there is none, uploaded once), after a complete view of the
//     folder showed no copy there (one the user marked \Deleted stays
//     the copy).
//   - A voicemail deleted on the phone has all its copies deleted upstream,
//     also copies the user restored on the server: delete wins. A copy
//     marked \Deleted already is on its way out (a server without UID
//     EXPUNGE keeps it until a client expunges) and is left alone.
//   - Flags merge three-way against the state's (for an upload whose
//     answer was lost, the flags it was sent with), or without a base when
//     there is none (unheard wins, so the lamp lights).
//   - A voicemail remembered as removed that is back in INBOX on both
//     sides has no copy left in the server's Trash.
//   - Of several copies of one voicemail, the one the state names (else the
//     oldest) is kept and the others are removed.
//   - A voicemail with no copy is uploaded only when the view of the folder
//     is complete or it was never seen before; an upload whose outcome is
//     unknown is searched for first (the executor makes the view complete).
func decide(local map[uuid.UUID]localMsg, st map[uuid.UUID]MessageState, ob observation) ([]action, map[uuid.UUID]MessageState) {
	ids := make([]uuid.UUID, 0, len(local)+len(st)+len(ob.copies))
	for id := range local {
		ids = append(ids, id)
	}
	for id := range st {
		ids = append(ids, id)
	}
	for id := range ob.copies {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	ids = slices.Compact(ids)

	var acts, appends []action
	next := make(map[uuid.UUID]MessageState, len(st))
	for _, id := range ids {
		l := local[id]
		e, has := st[id]
		ups := ob.copies[id]
		associated := has && e.UID != 0 && !e.Removed && !e.Appending
		if l.where == inInbox && has && e.Removed && ob.leftovers {
			// Undeleted on the phone: a marked copy is what the engine's
			// delete left, not the copy.
			ups = slices.DeleteFunc(slices.Clone(ups), func(u upMsg) bool { return u.flags&um.FlagDeleted != 0 })
		}
		keep := pickKeep(ups, e, has)
		switch l.where {
		case inInbox:
			switch {
			case len(ups) > 0:
				var merged um.Flags
				if has && !e.Removed {
					// An upload whose answer was lost has a base too: the
					// flags it was sent with, so what the phone changed
					// since (heard while the server was down) is kept.
					merged = merge3(e.Flags, l.flags, keep.flags)
				} else {
					merged = mergeNoBase(l.flags, keep.flags)
				}
				if add := merged &^ l.flags & syncMask; add != 0 {
					acts = append(acts, action{kind: actSetLocal, id: id, add: add})
				}
				if del := l.flags &^ merged & syncMask; del != 0 {
					acts = append(acts, action{kind: actSetLocal, id: id, del: del})
				}
				if add, del := merged&^keep.flags, keep.flags&^merged; add|del != 0 {
					acts = append(acts, action{kind: actStore, id: id, uid: keep.uid, add: add, del: del})
				}
				for _, u := range ups {
					if u.uid != keep.uid && u.flags&um.FlagDeleted == 0 {
						acts = append(acts, action{kind: actDropDup, id: id, uid: u.uid})
					}
				}
				if has && e.Removed {
					// Back in INBOX on both sides after a removal: a restore
					// cut short by a crash (a MOVE is two steps for some
					// servers) or the user's COPY left a copy in Trash, which
					// would be a second one there at the next delete.
					acts = append(acts, action{kind: actClearTrash, id: id})
				}
				next[id] = MessageState{UID: uint32(keep.uid), Flags: merged}
			case associated && ob.gone[imap.UID(e.UID)]:
				acts = append(acts, action{kind: actDeleteLocal, id: id})
				next[id] = MessageState{Flags: e.Flags, Removed: true}
			case associated:
				next[id] = e // not seen, not confirmed gone: nothing is known
			case has && e.Removed && !ob.complete:
				next[id] = e // a copy may be in the folder unseen: look first
			case has && e.Removed:
				acts = append(acts, action{kind: actRestore, id: id})
				next[id] = MessageState{Flags: l.flags & syncMask}
			case has && !ob.complete:
				next[id] = e // its copy may be there unseen
			default:
				appends = append(appends, action{kind: actAppend, id: id})
				next[id] = MessageState{Flags: l.flags & syncMask, Appending: true}
			}
		case elsewhere:
			for _, u := range ups {
				if u.flags&um.FlagDeleted == 0 {
					// Removed already: Trash may hold a copy (a move cut short
					// by a crash leaves one in both); the executor looks.
					acts = append(acts, action{kind: actDeleteUp, id: id, uid: u.uid, again: has && e.Removed})
				}
			}
			switch {
			case len(ups) > 0 || has && (!associated || ob.gone[imap.UID(e.UID)] || ob.complete):
				base := l.flags & syncMask
				if has {
					base = e.Flags
				}
				next[id] = MessageState{Flags: base, Removed: true}
			case has:
				next[id] = e
			}
		default: // absent
			for _, u := range ups {
				if has && u.flags&um.FlagDeleted == 0 {
					acts = append(acts, action{kind: actDeleteUp, id: id, uid: u.uid})
				}
			}
			if has && len(ups) == 0 && associated && !ob.gone[imap.UID(e.UID)] && !ob.complete {
				next[id] = e // its copy may be there unseen
			}
		}
	}
	return append(acts, appends...), next
}
