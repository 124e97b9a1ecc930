package upstream_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/upstream"
	"github.com/embeddedum/um/wav"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// TestPhoneDeleteRacingUserMove: the user's client moves a voicemail's
// copy to Trash at the moment the phone deletes it. Dovecot's MOVE is a
// copy and an expunge, so two MOVEs of one message at once both copy it
// (seen in the model test, seeds 7256571393309197880 on exchange-online
// and 6040641912954396293 on dovecot): Trash then holds two copies. The
// user's copy lands before the engine's move, or, when Dovecot makes it
// wait for Trash's lock, after the engine's own look into Trash; the test
// makes each end state with a COPY. Either way one live copy is left in
// Trash: at once, or at the next full pass.
func TestPhoneDeleteRacingUserMove(t *testing.T) {
	for _, late := range []bool{false, true} {
		name := "user's copy first"
		if late {
			name = "user's copy after the engine's look"
		}
		t.Run(name, func(t *testing.T) {
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
			userCopy := func(folder string, uid imap.UID) {
				mc.sel(folder)
				if _, err := mc.c.Copy(imap.UIDSetNum(uid), "Trash").Wait(); err != nil {
					t.Fatal(err)
				}
			}
			if !late {
				userCopy("INBOX", uids[0])
			}
			if err := mb.Delete(ctx, m.ID); err != nil {
				t.Fatal(err)
			}
			eventually(t, "copy in Trash", func() bool { return len(mc.live("Trash", m.ID)) > 0 && len(mc.find("INBOX", m.ID)) == 0 })
			if late {
				userCopy("Trash", mc.live("Trash", m.ID)[0])
			}
			e.waitSynced("1001")
			if n := len(mc.live("Trash", m.ID)); n != 1 {
				t.Fatalf("live copies in Trash = %d, want 1", n)
			}
		})
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

// TestLargeDepositIntact: voicemails of every size around go-imap's 4 KiB
// threshold for non-synchronizing literals, and a 30-second one, arrive
// upstream byte for byte as um renders them (the guard turns a large
// APPEND's literal into LITERAL+, Dovecot offers it).
func TestLargeDepositIntact(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	mb := e.sync("1001", "")
	mc := newMailClient(t, d, "1001")
	ctx := context.Background()
	durs := []time.Duration{10 * time.Millisecond, 30 * time.Second}
	for ms := 135; ms <= 138; ms++ { // rendered at about 4,050 to 4,120 bytes
		durs = append(durs, time.Duration(ms)*time.Millisecond)
	}
	for _, dur := range durs {
		m, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Tone(dur)), CallerNumber: "100", Duration: dur})
		if err != nil {
			t.Fatal(err)
		}
		var want bytes.Buffer
		audio, err := mb.OpenAudio(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.RenderEmail(m, um.RenderOptions{Mailbox: "1001"}).WriteTo(&want, audio); err != nil {
			t.Fatal(err)
		}
		audio.Close()
		e.waitSynced("1001")
		uids := mc.find("INBOX", m.ID)
		if len(uids) != 1 {
			t.Fatalf("%v: copies = %d, want 1", dur, len(uids))
		}
		section := &imap.FetchItemBodySection{Peek: true}
		bufs, err := mc.c.Fetch(imap.UIDSetNum(uids[0]), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
		if err != nil || len(bufs) != 1 {
			t.Fatalf("%v: fetch: %v (%d results)", dur, err, len(bufs))
		}
		if got := bufs[0].FindBodySection(section); !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%v: upstream copy of %d bytes differs from the %d rendered", dur, len(got), want.Len())
		}
	}
}
