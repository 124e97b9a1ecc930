package upstream_test

import (
	"context"
	"testing"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/emersion/go-imap/v2"
)

// userRemoves are the ways a user takes a voicemail out of the synced
// folder in their own mail client; each deletes it on the phone, and none
// may bring a copy back: where the user put it, it stays the only one.
var userRemoves = []struct {
	name string
	// do removes the copy uid from INBOX.
	do func(t *testing.T, mc *mailClient, uid imap.UID)
	// want is how many copies each folder holds afterwards.
	want map[string]int
}{
	{"expunge", func(t *testing.T, mc *mailClient, uid imap.UID) {
		mc.store("INBOX", uid, imap.StoreFlagsAdd, imap.FlagDeleted)
		if err := mc.c.UIDExpunge(imap.UIDSetNum(uid)).Close(); err != nil {
			t.Fatal(err)
		}
	}, map[string]int{"INBOX": 0, "Trash": 0}},
	{"move to Trash", func(t *testing.T, mc *mailClient, uid imap.UID) {
		mc.sel("INBOX")
		if _, err := mc.c.Move(imap.UIDSetNum(uid), "Trash").Wait(); err != nil {
			t.Fatal(err)
		}
	}, map[string]int{"INBOX": 0, "Trash": 1}},
	{"file into a folder", func(t *testing.T, mc *mailClient, uid imap.UID) {
		if err := mc.c.Create("Keep", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		mc.sel("INBOX")
		if _, err := mc.c.Move(imap.UIDSetNum(uid), "Keep").Wait(); err != nil {
			t.Fatal(err)
		}
	}, map[string]int{"INBOX": 0, "Trash": 0, "Keep": 1}},
}

// TestUserRemovalNeverReuploaded: a voicemail the user expunged, trashed or
// filed upstream is deleted on the phone (the lamp follows) and never
// uploaded again, however many passes follow, and a restart changes
// nothing.
func TestUserRemovalNeverReuploaded(t *testing.T) {
	for _, tc := range userRemoves {
		t.Run(tc.name, func(t *testing.T) {
			d := startDovecot(t, "1001")
			e := newEnv(t, d)
			mb := e.sync("1001", "")
			mc := newMailClient(t, d, "1001")
			ctx := context.Background()
			m := deposit(t, mb, "100")
			other := deposit(t, mb, "200")
			e.waitSynced("1001")
			uids := mc.find("INBOX", m.ID)
			if len(uids) != 1 {
				t.Fatalf("copies after deposit = %d, want 1", len(uids))
			}

			tc.do(t, mc, uids[0])
			eventually(t, "deleted on the phone", func() bool {
				got, err := mb.Message(ctx, m.ID)
				return err == nil && got.Folder == um.Trash
			})
			for range 3 {
				e.waitSynced("1001")
			}
			e.eng.Close()
			e.startEngine()
			if err := e.eng.Add(ctx, e.config("1001", "")); err != nil {
				t.Fatal(err)
			}
			e.waitSynced("1001")
			for folder, want := range tc.want {
				if n := len(mc.find(folder, m.ID)); n != want {
					t.Errorf("copies in %s = %d, want %d", folder, n, want)
				}
			}
			if n := len(mc.find("INBOX", other.ID)); n != 1 {
				t.Errorf("copies of the other voicemail = %d, want 1", n)
			}
			if st, _ := mb.MWI(ctx); st.New != 1 {
				t.Errorf("MWI New = %d, want 1 (the other voicemail)", st.New)
			}
		})
	}
}

// TestPhoneUndeleteOneCopy: undelete on the phone brings the copy back
// from the server's Trash (none is left there), and deleting again leaves
// one copy in Trash, not two.
func TestPhoneUndeleteOneCopy(t *testing.T) {
	e, mb, mc, m := oneVoicemail(t, dovecot.Options{})
	ctx := context.Background()

	for round := range 2 {
		if err := mb.Delete(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
		eventually(t, "copy in Trash", func() bool { return len(mc.find("Trash", m.ID)) == 1 })
		e.waitSynced("1001")
		if _, err := mb.Undelete(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
		eventually(t, "copy back in INBOX", func() bool { return len(mc.find("INBOX", m.ID)) == 1 })
		e.waitSynced("1001")
		e.waitSynced("1001")
		if n, k := len(mc.find("INBOX", m.ID)), len(mc.find("Trash", m.ID)); n != 1 || k != 0 {
			t.Fatalf("round %d: copies in INBOX, Trash = %d, %d; want 1, 0", round, n, k)
		}
	}
	if err := mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "copy in Trash", func() bool { return len(mc.find("Trash", m.ID)) == 1 })
	e.waitSynced("1001")
	if n, k := len(mc.find("INBOX", m.ID)), len(mc.find("Trash", m.ID)); n != 0 || k != 1 {
		t.Fatalf("after the last delete: copies in INBOX, Trash = %d, %d; want 0, 1", n, k)
	}
}

// TestUndeleteAfterUserExpunge: a voicemail the user expunged upstream and
// the phone then undeletes has no copy left to restore: it is uploaded
// once.
func TestUndeleteAfterUserExpunge(t *testing.T) {
	e, mb, mc, m := oneVoicemail(t, dovecot.Options{})
	ctx := context.Background()
	userRemoves[0].do(t, mc, mc.find("INBOX", m.ID)[0])
	eventually(t, "deleted on the phone", func() bool {
		got, err := mb.Message(ctx, m.ID)
		return err == nil && got.Folder == um.Trash
	})
	e.waitSynced("1001")
	if _, err := mb.Undelete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "uploaded again", func() bool { return len(mc.find("INBOX", m.ID)) == 1 })
	e.waitSynced("1001")
	e.waitSynced("1001")
	if n := len(mc.find("INBOX", m.ID)); n != 1 {
		t.Fatalf("copies after undelete = %d, want 1", n)
	}
	if got, _ := mb.Message(ctx, m.ID); got.Folder != um.Inbox {
		t.Fatalf("undeleted voicemail is in %q, want INBOX", got.Folder)
	}
}

// TestPhoneUndeleteNoUIDPlus: on a server without UIDPLUS the copies the
// engine removes from Trash stay there marked \Deleted; undelete on the
// phone brings back the live copy, never one of those (a copy of it would
// be \Deleted too, and the voicemail would have no live copy in INBOX).
func TestPhoneUndeleteNoUIDPlus(t *testing.T) {
	e, mb, mc, m := oneVoicemail(t, dovecot.OldServer())
	ctx := context.Background()
	live := func(folder string) (n int) {
		for _, uid := range mc.find(folder, m.ID) {
			if !hasFlag(mc.flags(folder, uid), imap.FlagDeleted) {
				n++
			}
		}
		return n
	}
	for round := range 3 {
		if err := mb.Delete(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
		eventually(t, "live copy in Trash", func() bool { return live("Trash") == 1 && live("INBOX") == 0 })
		e.waitSynced("1001")
		if _, err := mb.Undelete(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
		eventually(t, "live copy back in INBOX", func() bool { return live("INBOX") == 1 })
		e.waitSynced("1001")
		e.waitSynced("1001")
		if n, k := live("INBOX"), live("Trash"); n != 1 || k != 0 {
			t.Fatalf("round %d: live copies in INBOX, Trash = %d, %d; want 1, 0", round, n, k)
		}
		got, err := mb.Message(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Folder != um.Inbox || got.Flags&um.FlagDeleted != 0 {
			t.Fatalf("round %d: voicemail in %q with flags %v, want INBOX without \\Deleted", round, got.Folder, got.Flags)
		}
	}
}

// TestRestoreLeavesNoTrashCopy: a voicemail removed before that is back in
// INBOX on both sides (here the user copied it out of Trash while the PBX
// was down and the phone undeleted it; a restore cut short by a crash
// leaves the same) keeps no copy in the server's Trash, so deleting it
// again leaves one there, not two.
func TestRestoreLeavesNoTrashCopy(t *testing.T) {
	e, mb, mc, m := oneVoicemail(t, dovecot.Options{})
	ctx := context.Background()
	if err := mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "copy in Trash", func() bool { return len(mc.find("Trash", m.ID)) == 1 && len(mc.find("INBOX", m.ID)) == 0 })
	e.waitSynced("1001")

	e.eng.Close()
	uid := mc.find("Trash", m.ID)[0]
	if _, err := mc.c.Copy(imap.UIDSetNum(uid), "INBOX").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Undelete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	e.startEngine()
	if err := e.eng.Add(ctx, e.config("1001", "")); err != nil {
		t.Fatal(err)
	}
	e.waitSynced("1001")
	e.waitSynced("1001")
	if n, k := len(mc.find("INBOX", m.ID)), len(mc.find("Trash", m.ID)); n != 1 || k != 0 {
		t.Fatalf("back in INBOX: copies in INBOX, Trash = %d, %d; want 1, 0", n, k)
	}
	if got, _ := mb.Message(ctx, m.ID); got.Folder != um.Inbox {
		t.Fatalf("undeleted voicemail is in %q, want INBOX", got.Folder)
	}

	if err := mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "copy in Trash", func() bool { return len(mc.find("INBOX", m.ID)) == 0 })
	e.waitSynced("1001")
	if k := len(mc.find("Trash", m.ID)); k != 1 {
		t.Fatalf("deleted again: copies in Trash = %d, want 1", k)
	}
}
