package upstream_test

import (
	"context"
	"testing"

	"github.com/emersion/go-imap/v2"
)

func TestDepositAndFlags(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	mc := newMailClient(t, d, "1001")
	mc.appendMail("INBOX", "lunch?", imap.FlagDeleted)
	mb := e.sync("1001", "")
	ctx := context.Background()

	m := deposit(t, mb, "+4930123456")
	var uids []imap.UID
	eventually(t, "deposit appears upstream", func() bool {
		uids = mc.find("INBOX", m.ID)
		return len(uids) > 0
	})
	e.waitSynced("1001")
	if uids = mc.find("INBOX", m.ID); len(uids) != 1 {
		t.Fatalf("copies upstream = %d, want 1", len(uids))
	}
	if hasFlag(mc.flags("INBOX", uids[0]), imap.FlagSeen) {
		t.Fatalf("new voicemail is \\Seen upstream")
	}

	// Heard on the phone: \Seen upstream.
	if err := mb.MarkHeard(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "\\Seen upstream", func() bool { return hasFlag(mc.flags("INBOX", uids[0]), imap.FlagSeen) })

	// Unheard by the other mail client: the lamp lights again.
	mc.store("INBOX", uids[0], imap.StoreFlagsDel, imap.FlagSeen)
	eventually(t, "lamp on", func() bool { s, ok := e.lastMWI("1001"); return ok && s.New == 1 })
	// Read in the other client: the lamp goes off.
	mc.store("INBOX", uids[0], imap.StoreFlagsAdd, imap.FlagSeen)
	eventually(t, "lamp off", func() bool { s, ok := e.lastMWI("1001"); return ok && s.New == 0 && s.Old == 1 })

	// Deleted upstream (moved to Trash by the client): deleted on the phone.
	mc.sel("INBOX")
	if _, err := mc.c.Move(imap.UIDSetNum(uids[0]), "Trash").Wait(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted on the phone", func() bool {
		got, err := mb.Message(ctx, m.ID)
		return err == nil && got.Folder == "Trash"
	})

	// Deleted on the phone: moved to Trash upstream, the user's mail stays.
	m2 := deposit(t, mb, "+4930999")
	eventually(t, "second deposit upstream", func() bool { return len(mc.find("INBOX", m2.ID)) == 1 })
	if err := mb.Delete(ctx, m2.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "moved to Trash upstream", func() bool { return len(mc.find("Trash", m2.ID)) == 1 })
	if n := len(mc.find("INBOX", m2.ID)); n != 0 {
		t.Fatalf("copies in INBOX after delete = %d, want 0", n)
	}
	if n := mc.count("INBOX"); n != 1 {
		t.Fatalf("INBOX holds %d messages, want the user's 1 (marked \\Deleted, never expunged)", n)
	}
	if s := e.eng.Status("1001"); !s.Connected || s.LastError != nil || !s.Idle {
		t.Fatalf("Status() = %+v, want connected with IDLE and no error", s)
	}
}
