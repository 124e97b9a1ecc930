package boltstore

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// setFlag sets or clears \Seen on deposit i of want through ctx's
// context and records the message as acknowledged in want.
func setFlag(t *testing.T, s *Store, dctx context.Context, want []deposited, i int, on bool) {
	t.Helper()
	op := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}
	if !on {
		op.Mode = um.FlagsRemove
	}
	changed, err := s.SetFlags(dctx, "1001", []uuid.UUID{want[i].m.ID}, op)
	if err != nil || len(changed) != 1 {
		t.Fatalf("SetFlags() = %v, %v", changed, err)
	}
	want[i].m = changed[0]
}

// expectFlags checks the flags and ModSeqs of INBOX against want, beyond
// what expectExactly checks.
func expectFlags(t *testing.T, s *Store, want []deposited) {
	t.Helper()
	expectExactly(t, s, want)
	msgs, err := s.List(ctx, "1001", um.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range want {
		if msgs[i].Flags != d.m.Flags {
			t.Errorf("flags of UID %d = %v, want %v", d.m.UID, msgs[i].Flags, d.m.Flags)
		}
	}
}

// hearAll sets \Seen on every deposit of want under a um.Durability and
// waits for it, and returns the Durability and its context.
func hearAll(t *testing.T, s *Store, want []deposited) (*um.Durability, context.Context) {
	t.Helper()
	d := new(um.Durability)
	dctx := um.WithDurability(ctx, d)
	for i := range want {
		setFlag(t, s, dctx, want, i, true)
	}
	if err := d.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	return d, dctx
}

// openAfterSyncedPowerLoss opens a copy of s's directory as a power loss
// right after s's last synced commit leaves it: um.db as it is now, the
// log as written.
func openAfterSyncedPowerLoss(t *testing.T, s *Store) *Store {
	t.Helper()
	crash := copyDir(t, s.dir)
	now := readDB(t, s.dir)
	losePower(t, crash, now, now)
	return openAt(t, crash)
}

// lastFrameOff returns the offset of the last frame of the newest segment
// that holds any, and that segment's path.
func lastFrameOff(t *testing.T, dir string) (string, int64) {
	t.Helper()
	seqs, err := segments(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(seqs) - 1; i >= 0; i-- {
		fs, err := readFrames(dir, seqs[i])
		if err != nil {
			t.Fatal(err)
		}
		if len(fs) > 1 {
			return segPath(dir, seqs[i]), fs[len(fs)-1].off
		}
	}
	t.Fatal("no segment with frames")
	return "", 0
}

// TestPowerLossLoggedFlags loses power after flag changes that went through
// the log between deposits, in both worst ways (TestPowerLossMidEpoch):
// replay applies them again in their order, so every message has the
// flags and the ModSeq it was acknowledged with.
func TestPowerLossLoggedFlags(t *testing.T) {
	for _, metasLost := range []bool{false, true} {
		name := map[bool]string{false: "pages lost", true: "meta pages lost"}[metasLost]
		t.Run(name, func(t *testing.T) {
			s := openStore(t)
			newMailbox(t, s, "1001")
			synced := readDB(t, s.dir)
			want := depositMix(t, s, 6)
			for i := range want {
				setFlag(t, s, ctx, want, i, true)
			}
			setFlag(t, s, ctx, want, 1, false)
			want = append(want, depositMix(t, s, 3)...)
			setFlag(t, s, ctx, want, 7, true)
			crash := copyDir(t, s.dir)
			if metasLost {
				losePower(t, crash, readDB(t, s.dir), synced)
			} else {
				losePower(t, crash, synced, readDB(t, s.dir))
			}
			expectFlags(t, openAt(t, crash), want)
		})
	}
}

// TestPowerLossEarlyFlags loses power after a flag change made with a
// um.Durability returned (applied, visible) but before its frame was
// synced: the frame is gone while um.db's meta page names the commit that
// applied it. Open must not trust um.db (the epoch's kindEarly frame says a
// commit may lack its frame): it goes back to the base and replays, and
// every change whose Wait returned is there, the unacknowledged one not.
func TestPowerLossEarlyFlags(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	synced := readDB(t, s.dir)
	want := depositMix(t, s, 4)
	d, dctx := hearAll(t, s, want)
	acked := append([]deposited(nil), want...)
	setFlag(t, s, dctx, want, 2, false) // never waited for
	crash := copyDir(t, s.dir)
	path, off := lastFrameOff(t, crash)
	if err := os.Truncate(path, off); err != nil {
		t.Fatal(err)
	}
	losePower(t, crash, synced, readDB(t, s.dir))
	if err := d.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	c := openAt(t, crash)
	expectFlags(t, c, acked)
	// The store goes on from the replayed state.
	setFlag(t, c, ctx, acked, 2, false)
	expectFlags(t, reopen(t, c), acked)
}

// TestEarlyEpochSyncedWriteTrusted checks the other side: a write the log
// does not hold (a new folder), committed with bbolt's syncs after early
// flag changes, ends their epoch with a kindMark frame, so after a power
// loss that leaves um.db as synced, Open trusts it rather than going back
// to the epoch's base, which would lose the folder.
func TestEarlyEpochSyncedWriteTrusted(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	want := depositMix(t, s, 3)
	hearAll(t, s, want)
	if _, err := s.CreateFolder(ctx, "1001", "Work"); err != nil {
		t.Fatal(err)
	}
	c := openAfterSyncedPowerLoss(t, s)
	expectFlags(t, c, want)
	if _, err := c.CreateFolder(ctx, "1001", "Work"); err == nil {
		t.Errorf("the folder created after the early flag changes is gone after recovery")
	}
}

// TestEarlyEpochRangesKeptForRecovery deletes a folder whose message's
// content lies in the segment of an epoch with early commits: the synced
// commit ends that epoch, which stays the newest in the log, and recovery
// reads it up to its kindMark frame. The content's range must stay until a
// later epoch's base frame is on disk: freed at once, it would cut the
// epoch's frames short before the mark, and after a power loss Open would
// go back to the base and lose the deletion.
func TestEarlyEpochRangesKeptForRecovery(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	if _, err := s.CreateFolder(ctx, "1001", "Work"); err != nil {
		t.Fatal(err)
	}
	want := depositMix(t, s, 3) // 48 and 49 KB in the segment, one small
	if _, err := s.Move(ctx, "1001", []uuid.UUID{want[0].m.ID}, "Work", time.Time{}); err != nil {
		t.Fatal(err)
	}
	want = want[1:]
	hearAll(t, s, want)
	if err := s.DeleteFolder(ctx, "1001", "Work"); err != nil {
		t.Fatal(err)
	}
	c := openAfterSyncedPowerLoss(t, s)
	expectFlags(t, c, want)
	if _, err := c.CreateFolder(ctx, "1001", "Work"); err != nil {
		t.Errorf("CreateFolder(Work) after recovery = %v; want the deleted folder gone", err)
	}
}
