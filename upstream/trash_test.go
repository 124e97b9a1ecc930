package upstream_test

import (
	"context"
	"testing"

	"github.com/embeddedum/um/upstream"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// TestPhoneDeleteRacingUserMove: the user's client moves a voicemail's
// copy to Trash at the moment the phone deletes it. Dovecot's MOVE is a
// copy and an expunge, so two MOVEs of one message at once both copy it
// (seen in the model test, seed 7256571393309197880): Trash then holds two
// copies. The end state is the same as the user's COPY into Trash just
// before the engine's MOVE, which this test makes: after the phone's
// delete, Trash holds one live copy, not two.
func TestPhoneDeleteRacingUserMove(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	mb := e.sync("1001", "")
	mc := newMailClient(t, d, "1001")
	ctx := context.Background()
	m := deposit(t, mb, "100")
	e.waitSynced("1001")
	uids := mc.find("INBOX", m.ID)
	if len(uids) != 1 {
		t.Fatalf("copies after deposit = %d, want 1", len(uids))
	}
	mc.sel("INBOX")
	if _, err := mc.c.Copy(imap.UIDSetNum(uids[0]), "Trash").Wait(); err != nil {
		t.Fatal(err)
	}

	if err := mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "copy gone from INBOX", func() bool { return len(mc.find("INBOX", m.ID)) == 0 })
	e.waitSynced("1001")
	e.waitSynced("1001")
	if n := len(mc.live("Trash", m.ID)); n != 1 {
		t.Fatalf("live copies in Trash = %d, want 1", n)
	}
}

// live returns the UIDs of the copies of id in folder not marked \Deleted.
func (mc *mailClient) live(folder string, id uuid.UUID) []imap.UID {
	mc.tb.Helper()
	mc.sel(folder)
	sd, err := mc.c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: upstream.IDHeader, Value: id.String()}},
		NotFlag: []imap.Flag{imap.FlagDeleted}}, nil).Wait()
	if err != nil {
		mc.tb.Fatal(err)
	}
	return sd.AllUIDs()
}
