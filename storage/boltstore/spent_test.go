package boltstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// TestSpentSegmentsDeleted: an epoch's segments that hold no content (only
// other writes' frames, and small deposits' whose content is in um.db) are
// deleted once a later epoch has begun, so a store under a steady stream of
// flag changes keeps a bounded log directory; segments that hold a content
// stay, and a store copied as a kill leaves it, or opened again, has every
// message, content and flag.
func TestSpentSegmentsDeleted(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	want := depositMix(t, s, 6) // four contents in segments, two in um.db
	var du um.Durability
	withDu := um.WithDurability(ctx, &du)
	const changes = 40 * epochLimit // forty epochs of flag changes, one a call
	heard := make(map[uuid.UUID]bool)
	for i := range changes {
		d := want[i%6]
		op := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}
		if heard[d.m.ID] {
			op.Mode = um.FlagsRemove
		}
		heard[d.m.ID] = !heard[d.m.ID]
		c := ctx
		if i%2 == 0 {
			c = withDu // half of them through the early path
		}
		if _, err := s.SetFlags(c, "1001", []uuid.UUID{d.m.ID}, op); err != nil {
			t.Fatalf("SetFlags #%d = %v", i, err)
		}
		if i%500 == 0 {
			// A small deposit now and then, in the epoch with the flags.
			small := randomBytes(1000)
			want = append(want, deposited{appendMsg(t, s, "1001", um.Inbox, small), small})
		}
	}
	if err := du.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// The contents' segments, the open epoch's lanes and the segments made
	// ahead: without the deletion, one or more per epoch.
	if n, most := countSegments(t, s), 4+maxLanes+segBatch; n > most {
		t.Errorf("log holds %d segments after %d epochs, want at most %d", n, changes/epochLimit, most)
	}
	check := func(name string, s *Store) {
		t.Helper()
		msgs, err := s.List(ctx, "1001", um.Inbox)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != len(want) {
			t.Fatalf("%s: List() = %d messages, want %d", name, len(msgs), len(want))
		}
		for i, d := range want {
			if msgs[i].ID != d.m.ID {
				t.Fatalf("%s: message %d is %s, want %s", name, i, msgs[i].ID, d.m.ID)
			}
			if got := msgs[i].Flags&um.FlagHeard != 0; got != heard[d.m.ID] {
				t.Errorf("%s: UID %d heard = %v, want %v", name, msgs[i].UID, got, heard[d.m.ID])
			}
			if b := readAll(t, s, "1001", d.m.ID); !bytes.Equal(b, d.content) {
				t.Errorf("%s: content of UID %d differs (%d bytes, want %d)", name, msgs[i].UID, len(b), len(d.content))
			}
		}
		if rep := mustCheck(t, s); len(rep.Problems) != 0 {
			t.Errorf("%s: Check() = %v, want no problems", name, rep.Problems)
		}
	}
	check("live", s)
	killed := copyDir(t, s.dir)
	check("killed", openAt(t, killed))
	dir := s.dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check("reopened", openAt(t, dir))
}

// TestSpentSegmentsKeepPowerLossSafe loses power right after the deletion
// of an ended epoch's segments, with the new epoch's early commits lost
// from um.db: recovery reads the new epoch, whose base frame the deletion
// waited for, and every acknowledged change is there.
func TestSpentSegmentsKeepPowerLossSafe(t *testing.T) {
	for _, metasLost := range []bool{false, true} {
		t.Run(fmt.Sprintf("metas lost %v", metasLost), func(t *testing.T) {
			s := openStore(t)
			newMailbox(t, s, "1001")
			want := depositMix(t, s, 3) // the first epoch, with contents
			flip := func(n int) {
				for i := range n {
					op := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}
					if i%2 == 1 {
						op.Mode = um.FlagsRemove
					}
					if _, err := s.SetFlags(ctx, "1001", []uuid.UUID{want[0].m.ID}, op); err != nil {
						t.Fatal(err)
					}
				}
			}
			flip(epochLimit + 10) // the second epoch, of flag changes only
			flagsOnly := newestWritten(t, s.dir)
			flip(epochLimit) // it ends, and the third begins
			if _, err := os.Stat(segPath(s.dir, flagsOnly)); !isNotExist(err) {
				t.Fatalf("segment %d of an ended epoch of flag changes: Stat = %v, want it deleted", flagsOnly, err)
			}
			base := readDB(t, s.dir) // um.db's synced state: the checkpoint's
			var du um.Durability
			if _, err := s.SetFlags(um.WithDurability(ctx, &du), "1001", []uuid.UUID{want[1].m.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagFlagged}); err != nil {
				t.Fatal(err)
			}
			if err := du.Wait(ctx); err != nil {
				t.Fatal(err)
			}
			crash := copyDir(t, s.dir)
			now := readDB(t, s.dir)
			if metasLost {
				losePower(t, crash, base, base)
			} else {
				losePower(t, crash, base, now)
			}
			r := openAt(t, crash)
			m, err := r.Get(ctx, "1001", want[1].m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if m.Flags&um.FlagFlagged == 0 {
				t.Errorf("the acknowledged \\Flagged of UID %d is lost", m.UID)
			}
			for _, d := range want {
				if b := readAll(t, r, "1001", d.m.ID); !bytes.Equal(b, d.content) {
					t.Errorf("content of UID %d differs", d.m.UID)
				}
			}
			if rep := mustCheck(t, r); len(rep.Problems) != 0 {
				t.Errorf("Check() = %v, want no problems", rep.Problems)
			}
		})
	}
}

// newestWritten returns the newest log segment in dir that holds a frame.
func newestWritten(t *testing.T, dir string) uint64 {
	t.Helper()
	seqs, err := segments(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(seqs) - 1; i >= 0; i-- {
		if fi, err := os.Stat(segPath(dir, seqs[i])); err == nil && fi.Size() > 0 {
			return seqs[i]
		}
	}
	t.Fatal("no segment holds a frame")
	return 0
}

// TestRemovedContentsSegmentDeleted: a segment that held contents is
// deleted once the last of them is removed and a later epoch has begun;
// while one is left it stays, readable, the removed ones' ranges punched.
func TestRemovedContentsSegmentDeleted(t *testing.T) {
	s := openStore(t)
	newMailbox(t, s, "1001")
	a, b := randomBytes(48000), randomBytes(52000)
	ma := appendMsg(t, s, "1001", um.Inbox, a)
	mb := appendMsg(t, s, "1001", um.Inbox, b)
	seg := newestWritten(t, s.dir)
	kept := randomBytes(60000)
	// Epochs end with a write the log does not take and begin with the
	// next logged one.
	n := 0
	nextEpoch := func() {
		t.Helper()
		n++
		if _, err := s.CreateFolder(ctx, "1001", fmt.Sprint("F", n)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.SetFlags(ctx, "1001", []uuid.UUID{ma.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagFlagged}); err != nil && n == 1 {
			t.Fatal(err)
		}
	}
	nextEpoch()
	mk := appendMsg(t, s, "1001", um.Inbox, kept) // in a segment of its own
	if err := s.Remove(ctx, "1001", []uuid.UUID{ma.ID}); err != nil {
		t.Fatal(err)
	}
	nextEpoch()
	nextEpoch()
	if _, err := os.Stat(segPath(s.dir, seg)); err != nil {
		t.Fatalf("segment %d with a content left: Stat = %v, want it kept", seg, err)
	}
	if got := readAll(t, s, "1001", mb.ID); !bytes.Equal(got, b) {
		t.Fatalf("the content left in segment %d differs", seg)
	}
	if err := s.Remove(ctx, "1001", []uuid.UUID{mb.ID}); err != nil {
		t.Fatal(err)
	}
	nextEpoch()
	nextEpoch()
	if _, err := os.Stat(segPath(s.dir, seg)); !isNotExist(err) {
		t.Fatalf("segment %d, its contents removed: Stat = %v, want it deleted", seg, err)
	}
	check := func(name string, s *Store) {
		t.Helper()
		if got := readAll(t, s, "1001", mk.ID); !bytes.Equal(got, kept) {
			t.Errorf("%s: the kept content differs", name)
		}
		for _, id := range []uuid.UUID{ma.ID, mb.ID} {
			if _, err := s.Get(ctx, "1001", id); !errors.Is(err, um.ErrNotFound) {
				t.Errorf("%s: Get(removed %s) = %v, want ErrNotFound", name, id, err)
			}
		}
		if rep := mustCheck(t, s); len(rep.Problems) != 0 {
			t.Errorf("%s: Check() = %v, want no problems", name, rep.Problems)
		}
	}
	check("live", s)
	check("killed", openAt(t, copyDir(t, s.dir)))
	dir := s.dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	check("reopened", openAt(t, dir))
}
