package upstream

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

func TestDecide(t *testing.T) {
	id := uuid.MustParse("00000000-0000-0000-0000-000000000001")
	heard := um.FlagHeard
	inbox := func(f um.Flags) map[uuid.UUID]localMsg { return map[uuid.UUID]localMsg{id: {where: inInbox, flags: f}} }
	deleted := map[uuid.UUID]localMsg{id: {where: elsewhere}}
	purged := map[uuid.UUID]localMsg{id: {where: absent}}
	assoc := func(uid uint32, f um.Flags) map[uuid.UUID]MessageState {
		return map[uuid.UUID]MessageState{id: {UID: uid, Flags: f}}
	}
	removed := map[uuid.UUID]MessageState{id: {Removed: true}}
	appending := map[uuid.UUID]MessageState{id: {Appending: true}}
	none := map[uuid.UUID]MessageState{}
	copies := func(complete bool, ups ...upMsg) observation {
		ob := observation{copies: map[uuid.UUID][]upMsg{}, complete: complete, gone: map[imap.UID]bool{}}
		if len(ups) > 0 {
			ob.copies[id] = ups
		}
		return ob
	}
	gone := func(uid imap.UID) observation {
		ob := copies(true)
		ob.gone[uid] = true
		return ob
	}

	tests := []struct {
		name  string
		local map[uuid.UUID]localMsg
		st    map[uuid.UUID]MessageState
		ob    observation
		want  []action
		next  map[uuid.UUID]MessageState
	}{
		{"new deposit, incremental view: append", inbox(0), none, copies(false), []action{{kind: actAppend, id: id}}, appending},
		{"new deposit, complete view: append", inbox(0), none, copies(true), []action{{kind: actAppend, id: id}}, appending},
		{"in sync: nothing", inbox(heard), assoc(5, heard), copies(false, upMsg{5, heard}), nil, assoc(5, heard)},
		{"heard on the phone: \\Seen up", inbox(heard), assoc(5, 0), copies(false, upMsg{5, 0}),
			[]action{{kind: actStore, id: id, uid: 5, add: heard}}, assoc(5, heard)},
		{"unseen upstream: unheard on the phone", inbox(heard), assoc(5, heard), copies(false, upMsg{5, 0}),
			[]action{{kind: actSetLocal, id: id, del: heard}}, assoc(5, 0)},
		{"copy confirmed gone: delete on the phone, remember", inbox(0), assoc(5, 0), gone(5),
			[]action{{kind: actDeleteLocal, id: id}}, removed},
		{"copy not seen, not confirmed gone: nothing", inbox(0), assoc(5, 0), copies(true), nil, assoc(5, 0)},
		{"an empty answer deletes nothing", inbox(0), assoc(5, 0), observation{}, nil, assoc(5, 0)},
		{"removed and undeleted on the phone, incremental view: nothing until a complete one", inbox(0), removed, copies(false),
			nil, removed},
		{"removed and undeleted on the phone, a copy marked \\Deleted in the folder: it is the copy", inbox(0), removed,
			copies(true, upMsg{6, um.FlagDeleted}), []action{{kind: actSetLocal, id: id, add: um.FlagDeleted}, {kind: actClearTrash, id: id}},
			map[uuid.UUID]MessageState{id: {UID: 6, Flags: um.FlagDeleted}}},
		{"removed and undeleted on the phone, the engine's marked leftover in the folder (no UIDPLUS): restore", inbox(0), removed,
			func() observation { ob := copies(true, upMsg{6, um.FlagDeleted}); ob.leftovers = true; return ob }(),
			[]action{{kind: actRestore, id: id}}, map[uuid.UUID]MessageState{id: {}}},
		{"removed and undeleted on the phone: restore, never append", inbox(0), removed, copies(true),
			[]action{{kind: actRestore, id: id}}, map[uuid.UUID]MessageState{id: {}}},
		{"removed, back in INBOX on both sides: Trash cleared", inbox(0), removed, copies(true, upMsg{9, 0}),
			[]action{{kind: actClearTrash, id: id}}, assoc(9, 0)},
		{"removed, still deleted on the phone: nothing", deleted, removed, copies(true), nil, removed},
		{"removed, user restored it upstream: delete wins", deleted, removed, copies(true, upMsg{9, 0}),
			[]action{{kind: actDeleteUp, id: id, uid: 9, again: true}}, removed},
		{"a copy marked \\Deleted is not the one kept", inbox(0), none, copies(true, upMsg{3, um.FlagDeleted}, upMsg{5, 0}), nil, assoc(5, 0)},
		{"deleted on the phone: copy to Trash, remember", deleted, assoc(5, heard), copies(false, upMsg{5, heard}),
			[]action{{kind: actDeleteUp, id: id, uid: 5}}, map[uuid.UUID]MessageState{id: {Flags: heard, Removed: true}}},
		{"deleted on both sides", deleted, assoc(5, 0), gone(5), nil, removed},
		{"deleted on the phone, copy marked \\Deleted already: left alone", deleted, removed, copies(true, upMsg{5, um.FlagDeleted}), nil, removed},
		{"purged on the phone: copy deleted, entry dropped", purged, assoc(5, 0), copies(false, upMsg{5, 0}),
			[]action{{kind: actDeleteUp, id: id, uid: 5}}, none},
		{"purged after removal: entry dropped", purged, removed, copies(true), nil, none},
		{"someone else's copy: left alone", purged, none, copies(true, upMsg{7, 0}), nil, none},
		{"append's answer lost, copy found: associate", inbox(0), appending, copies(true, upMsg{8, 0}), nil, assoc(8, 0)},
		{"append's answer lost, heard on the phone since: heard kept", inbox(heard), appending, copies(true, upMsg{8, 0}),
			[]action{{kind: actStore, id: id, uid: 8, add: heard}}, assoc(8, heard)},
		{"append's answer lost, unseen in an incremental view: wait", inbox(0), appending, copies(false), nil, appending},
		{"duplicates: keep the state's copy, drop the others", inbox(0), assoc(6, 0), copies(true, upMsg{4, 0}, upMsg{6, 0}),
			[]action{{kind: actDropDup, id: id, uid: 4}}, assoc(6, 0)},
		{"found again without a base: unheard wins", inbox(heard), none, copies(true, upMsg{3, um.FlagFlagged}),
			[]action{{kind: actSetLocal, id: id, add: um.FlagFlagged}, {kind: actSetLocal, id: id, del: heard}}, assoc(3, um.FlagFlagged)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			acts, next := decide(tc.local, tc.st, tc.ob)
			if !slices.Equal(acts, tc.want) {
				t.Errorf("decide() actions = %v, want %v", fmtActs(acts), fmtActs(tc.want))
			}
			if !maps.Equal(next, tc.next) {
				t.Errorf("decide() state = %v, want %v", next, tc.next)
			}
		})
	}
}

// TestDecideAppendsLast: uploads come after every other action, so flags
// and deletions are not held up behind a large APPEND.
func TestDecideAppendsLast(t *testing.T) {
	a := uuid.MustParse("00000000-0000-0000-0000-000000000001")
	b := uuid.MustParse("00000000-0000-0000-0000-000000000002")
	local := map[uuid.UUID]localMsg{a: {where: inInbox}, b: {where: elsewhere}}
	st := map[uuid.UUID]MessageState{b: {UID: 2}}
	acts, _ := decide(local, st, observation{copies: map[uuid.UUID][]upMsg{b: {{uid: 2}}}})
	want := []action{{kind: actDeleteUp, id: b, uid: 2}, {kind: actAppend, id: a}}
	if !slices.Equal(acts, want) {
		t.Fatalf("decide() = %v, want %v", fmtActs(acts), fmtActs(want))
	}
}

func fmtActs(acts []action) string {
	names := []string{"setLocal", "store", "deleteLocal", "deleteUp", "dropDup", "restore", "append", "clearTrash"}
	s := "["
	for _, a := range acts {
		s += fmt.Sprintf(" %s(uid %d +%v -%v)", names[a.kind], a.uid, a.add, a.del)
	}
	return s + " ]"
}
