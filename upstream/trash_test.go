package upstream_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/upstream"
	"github.com/embeddedum/um/wav"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// oneVoicemail starts a Dovecot with opts and user 1001, an engine that
// syncs mailbox 1001 to it and the user's mail client, and deposits one
// voicemail whose copy is then upstream.
func oneVoicemail(t *testing.T, opts dovecot.Options) (*env, *um.Mailbox, *mailClient, um.Message) {
	t.Helper()
	opts.Dir, opts.Users = t.TempDir(), map[string]string{"1001": "pass1001"}
	d, err := dovecot.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	e := newEnv(t, d)
	mb := e.sync("1001", "")
	mc := newMailClient(t, d, "1001")
	m := deposit(t, mb, "100")
	e.waitSynced("1001")
	return e, mb, mc, m
}

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
	for _, tc := range []struct {
		name string
		late bool // the user's copy comes after the engine's look
		down bool // the phone deletes while the PBX is down: a full pass moves the copy
	}{{"user's copy first", false, false}, {"user's copy after the engine's look", true, false},
		{"user's copy after the look of a full pass", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			e, mb, mc, m := oneVoicemail(t, dovecot.Options{})
			ctx := context.Background()
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
			if !tc.late {
				userCopy("INBOX", uids[0])
			}
			if tc.down {
				e.eng.Close()
			}
			if err := mb.Delete(ctx, m.ID); err != nil {
				t.Fatal(err)
			}
			if tc.down {
				e.startEngine()
				if err := e.eng.Add(ctx, e.config("1001", "")); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "copy in Trash", func() bool { return len(mc.live("Trash", m.ID)) > 0 && len(mc.find("INBOX", m.ID)) == 0 })
			if tc.late {
				userCopy("Trash", mc.live("Trash", m.ID)[0])
			}
			e.waitSynced("1001")
			if n := len(mc.live("Trash", m.ID)); n != 1 {
				t.Fatalf("live copies in Trash = %d, want 1", n)
			}
		})
	}
}

// TestDeleteWinsOverUserRestore: a voicemail deleted on the phone stays
// deleted when the user brings its copy back from the server's Trash into
// INBOX (moved, or copied so that Trash keeps one): the copy in INBOX goes
// away again and Trash holds exactly one; the phone's voicemail stays in
// um's Trash and the lamp stays off.
func TestDeleteWinsOverUserRestore(t *testing.T) {
	for _, how := range []string{"move", "copy"} {
		t.Run(how, func(t *testing.T) {
			e, mb, mc, m := oneVoicemail(t, dovecot.Options{})
			ctx := context.Background()
			if err := mb.Delete(ctx, m.ID); err != nil {
				t.Fatal(err)
			}
			eventually(t, "copy in Trash", func() bool { return len(mc.live("Trash", m.ID)) == 1 && len(mc.find("INBOX", m.ID)) == 0 })
			e.waitSynced("1001")

			uid := mc.live("Trash", m.ID)[0]
			mc.sel("Trash")
			var err error
			if how == "move" {
				_, err = mc.c.Move(imap.UIDSetNum(uid), "INBOX").Wait()
			} else {
				_, err = mc.c.Copy(imap.UIDSetNum(uid), "INBOX").Wait()
			}
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "the copy out of INBOX again", func() bool { return len(mc.live("INBOX", m.ID)) == 0 })
			e.waitSynced("1001")
			if n := len(mc.live("Trash", m.ID)); n != 1 {
				t.Errorf("live copies in Trash = %d, want 1", n)
			}
			got, err := mb.Message(ctx, m.ID)
			if err != nil || got.Folder != um.Trash {
				t.Errorf("voicemail on the phone: folder %q, err %v; want um's Trash", got.Folder, err)
			}
			if st, _ := mb.MWI(ctx); st.New != 0 || st.Old != 0 {
				t.Errorf("MWI = %d new, %d old; want 0, 0", st.New, st.Old)
			}
		})
	}
}

// TestUserDuplicateRemoved: a second copy of a voicemail the user's
// client makes in INBOX (a COPY of it there, as a filter or a restore
// from a backup would) is removed while the engine idles, keeping the one
// it uploaded; Trash gets none, and the voicemail stays on the phone.
func TestUserDuplicateRemoved(t *testing.T) {
	_, mb, mc, m := oneVoicemail(t, dovecot.Options{})
	ctx := context.Background()
	uids := mc.find("INBOX", m.ID)
	if len(uids) != 1 {
		t.Fatalf("copies after deposit = %d, want 1", len(uids))
	}
	mc.sel("INBOX")
	if _, err := mc.c.Copy(imap.UIDSetNum(uids[0]), "INBOX").Wait(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "one copy again", func() bool { return len(mc.live("INBOX", m.ID)) == 1 })
	if got := mc.live("INBOX", m.ID); got[0] != uids[0] {
		t.Errorf("kept copy %d, want the uploaded one, %d", got[0], uids[0])
	}
	if n := len(mc.find("Trash", m.ID)); n != 0 {
		t.Errorf("copies in Trash = %d, want 0", n)
	}
	if got, err := mb.Message(ctx, m.ID); err != nil || got.Folder != um.Inbox {
		t.Errorf("voicemail on the phone: folder %q, err %v; want INBOX", got.Folder, err)
	}
}

// TestUserTrashesRestoredCopy: the phone undeletes a voicemail, the
// engine brings its copy back from Trash, and the user moves that copy to
// Trash again before the engine's next pass (seed 8669043362667052560 on
// no-move-no-uidplus). That is the user's delete: the voicemail goes to
// um's Trash and is not uploaded again, and the server's Trash holds one
// live copy. On Dovecot as it comes and on a server without MOVE and
// UIDPLUS, whose client moves with COPY, \Deleted and EXPUNGE.
func TestUserTrashesRestoredCopy(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts dovecot.Options
	}{{"dovecot", dovecot.Options{}}, {"no MOVE, no UIDPLUS", dovecot.OldServer()}} {
		t.Run(tc.name, func(t *testing.T) {
			e, mb, mc, m := oneVoicemail(t, tc.opts)
			ctx := context.Background()
			if err := mb.Delete(ctx, m.ID); err != nil {
				t.Fatal(err)
			}
			eventually(t, "copy in Trash", func() bool { return len(mc.live("Trash", m.ID)) == 1 && len(mc.live("INBOX", m.ID)) == 0 })
			e.waitSynced("1001")
			if _, err := mb.Undelete(ctx, m.ID); err != nil {
				t.Fatal(err)
			}
			eventually(t, "copy back in INBOX", func() bool { return len(mc.live("INBOX", m.ID)) == 1 })

			uid := mc.live("INBOX", m.ID)[0]
			set := imap.UIDSetNum(uid)
			if mc.c.Caps().Has(imap.CapMove) {
				if _, err := mc.c.Move(set, "Trash").Wait(); err != nil {
					t.Fatal(err)
				}
			} else {
				if _, err := mc.c.Copy(set, "Trash").Wait(); err != nil {
					t.Fatal(err)
				}
				mc.store("INBOX", uid, imap.StoreFlagsAdd, imap.FlagDeleted)
				if err := mc.c.Expunge().Close(); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, "deleted on the phone", func() bool {
				got, err := mb.Message(ctx, m.ID)
				return err == nil && got.Folder == um.Trash
			})
			e.waitSynced("1001")
			e.waitSynced("1001")
			if n, k := len(mc.live("INBOX", m.ID)), len(mc.live("Trash", m.ID)); n != 0 || k != 1 {
				t.Fatalf("live copies in INBOX, Trash = %d, %d; want 0, 1", n, k)
			}
		})
	}
}

// throughHostile starts a Dovecot with user 1001 and an engine that
// syncs mailbox 1001 to it through the hostile proxy (honest until told).
func throughHostile(t *testing.T) (*env, *hostile, *um.Mailbox) {
	t.Helper()
	d := startDovecotPlain(t, "1001")
	h := startHostile(t, d)
	e := newEnvOpts(t, d, testOptions, nil)
	ctx := context.Background()
	mb, err := e.svc.EnsureMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config("1001", "")
	cfg.Addr, cfg.Security, cfg.TLSConfig = h.ln.Addr().String(), upstream.ImplicitTLS, h.cert.ClientConfig("localhost")
	if err := e.eng.Add(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return e, h, mb
}

// TestMoveAfterUserExpunge: the user moves a voicemail's copy just before
// the engine's UID MOVE of it reaches the server, which may answer NO
// [EXPUNGEISSUED]: to Trash as the phone deletes it, or back to INBOX as
// the phone undeletes it. That is no failure: the session goes on, and
// the voicemail has its one copy where the phone says.
func TestMoveAfterUserExpunge(t *testing.T) {
	for _, undelete := range []bool{false, true} {
		name := "phone deletes, user moves to Trash"
		if undelete {
			name = "phone undeletes, user restores from Trash"
		}
		t.Run(name, func(t *testing.T) {
			e, h, mb := throughHostile(t)
			d, ctx := e.d, context.Background()
			var err error
			m := deposit(t, mb, "100")
			e.waitSynced("1001")
			mc := newMailClient(t, d, "1001")
			from, to := "INBOX", "Trash"
			if undelete {
				if err := mb.Delete(ctx, m.ID); err != nil {
					t.Fatal(err)
				}
				eventually(t, "copy in Trash", func() bool { return len(mc.live("Trash", m.ID)) == 1 })
				e.waitSynced("1001")
				from, to = to, from
			}
			uids := mc.live(from, m.ID)
			if len(uids) != 1 {
				t.Fatalf("copies in %s = %d, want 1", from, len(uids))
			}
			user := dialUser(t, d, "1001", nil)
			var once sync.Once
			first := func(line string) {
				if !strings.Contains(strings.ToUpper(line), "UID MOVE") {
					return
				}
				once.Do(func() {
					if _, err := user.Select(from, nil).Wait(); err != nil {
						t.Error(err)
					}
					if _, err := user.Move(imap.UIDSetNum(uids[0]), to).Wait(); err != nil {
						t.Error(err)
					}
				})
			}
			h.before.Store(&first)
			conns := h.conns.Load()
			if undelete {
				_, err = mb.Undelete(ctx, m.ID)
			} else {
				err = mb.Delete(ctx, m.ID)
			}
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "the copy out of "+from, func() bool { return len(mc.live(from, m.ID)) == 0 })
			e.waitSynced("1001")
			e.waitSynced("1001")
			if n := h.conns.Load() - conns; n != 0 {
				t.Errorf("reconnects = %d, want 0 (status %+v)", n, e.eng.Status("1001"))
			}
			if n, k := len(mc.live(to, m.ID)), len(mc.live(from, m.ID)); n != 1 || k != 0 {
				t.Errorf("live copies in %s, %s = %d, %d; want 1, 0", to, from, n, k)
			}
			want := um.Trash
			if undelete {
				want = um.Inbox
			}
			if got, err := mb.Message(ctx, m.ID); err != nil || got.Folder != want {
				t.Errorf("voicemail on the phone: folder %q, err %v; want %q", got.Folder, err, want)
			}
		})
	}
}

// phoneDeletesOnLook is a store through which the phone deletes a
// voicemail (moves it to Trash) right after the engine looked at it in
// INBOX: the look answers INBOX, the store has it in Trash.
type phoneDeletesOnLook struct {
	um.Store
	mu sync.Mutex
	id uuid.UUID // armed for this voicemail
}

func (s *phoneDeletesOnLook) Unwrap() um.Store { return s.Store }

func (s *phoneDeletesOnLook) Get(ctx context.Context, mailbox string, id uuid.UUID) (um.Message, error) {
	m, err := s.Store.Get(ctx, mailbox, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && id == s.id && m.Folder == um.Inbox {
		s.id = uuid.UUID{}
		if _, err := s.Store.Move(ctx, mailbox, []uuid.UUID{id}, um.Trash, time.Now()); err != nil {
			return m, err
		}
	}
	return m, err
}

// TestUserDeleteRacingPhoneDelete: the user expunges a voicemail's copy
// upstream and the phone deletes the voicemail at the moment the engine
// carries the user's delete over (seed 9776975224830749511 on cyrus). The
// voicemail is in um's Trash, never purged: two deletes of one voicemail
// by two parties are one delete.
func TestUserDeleteRacingPhoneDelete(t *testing.T) {
	d := startDovecot(t, "1001")
	store := &phoneDeletesOnLook{Store: memstore.New()}
	svc, err := um.New(store, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	st, err := upstream.NewFileState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions
	eng, err := upstream.New(svc, st, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close() })
	ctx := context.Background()
	mb, err := svc.EnsureMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{tb: t, d: d, svc: svc, eng: eng}
	if err := eng.Add(ctx, e.config("1001", "")); err != nil {
		t.Fatal(err)
	}
	m := deposit(t, mb, "100")
	e.waitSynced("1001")
	mc := newMailClient(t, d, "1001")
	uids := mc.find("INBOX", m.ID)
	if len(uids) != 1 {
		t.Fatalf("copies after deposit = %d, want 1", len(uids))
	}

	store.mu.Lock()
	store.id = m.ID
	store.mu.Unlock()
	mc.store("INBOX", uids[0], imap.StoreFlagsAdd, imap.FlagDeleted)
	if err := mc.c.UIDExpunge(imap.UIDSetNum(uids[0])).Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the phone's delete", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return store.id == uuid.UUID{}
	})
	e.waitSynced("1001")
	got, err := mb.Message(ctx, m.ID)
	if err != nil {
		t.Fatalf("voicemail after both deletes: %v, want it in um's Trash", err)
	}
	if got.Folder != um.Trash {
		t.Errorf("voicemail in %q, want um's Trash", got.Folder)
	}
}

// TestUserExpungeConfirmedInOneFetch: a copy the user expunged is
// confirmed gone by one UID FETCH that also names a copy the header search
// has just shown, with no FETCH by sequence number for the folder's last
// message first (a round trip saved) while such a copy exists.
func TestUserExpungeConfirmedInOneFetch(t *testing.T) {
	e, h, mb := throughHostile(t)
	d, ctx := e.d, context.Background()
	m := deposit(t, mb, "100")
	deposit(t, mb, "200")
	e.waitSynced("1001")
	mc := newMailClient(t, d, "1001")
	uids := mc.find("INBOX", m.ID)
	if len(uids) != 1 {
		t.Fatalf("copies after deposit = %d, want 1", len(uids))
	}
	seqFetches := h.commands("FETCH")
	mc.store("INBOX", uids[0], imap.StoreFlagsAdd, imap.FlagDeleted)
	if err := mc.c.UIDExpunge(imap.UIDSetNum(uids[0])).Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted on the phone", func() bool {
		got, err := mb.Message(ctx, m.ID)
		return err == nil && got.Folder == um.Trash
	})
	if n := h.commands("FETCH") - seqFetches; n != 0 {
		t.Errorf("FETCHes by sequence number = %d, want 0", n)
	}
}

// TestUndeleteWithCopyMarkedDeleted: the user marks a voicemail's copy
// \Deleted without expunging it, the phone deletes the voicemail (the
// marked copy stays: it is on its way out) and then undeletes it (seed
// 736466767699926084 on exchange-online). The marked copy is the
// voicemail's copy: nothing is uploaded again, and Trash gets none.
func TestUndeleteWithCopyMarkedDeleted(t *testing.T) {
	e, mb, mc, m := oneVoicemail(t, dovecot.Options{})
	ctx := context.Background()
	uids := mc.find("INBOX", m.ID)
	if len(uids) != 1 {
		t.Fatalf("copies after deposit = %d, want 1", len(uids))
	}
	mc.store("INBOX", uids[0], imap.StoreFlagsAdd, imap.FlagDeleted)
	eventually(t, "marked \\Deleted on the phone", func() bool {
		got, err := mb.Message(ctx, m.ID)
		return err == nil && got.Flags&um.FlagDeleted != 0
	})
	// The engine's own passes, not a full one of Sync's, carry these over.
	passed := func(since time.Time) func() bool {
		return func() bool { st := e.eng.Status("1001"); return st.LastSync.After(since) && st.Lag == 0 }
	}
	before := e.eng.Status("1001").LastSync
	if err := mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the delete carried over", passed(before))
	before = e.eng.Status("1001").LastSync
	if _, err := mb.Undelete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the undelete carried over", passed(before))
	for range 2 {
		if n, k := len(mc.find("INBOX", m.ID)), len(mc.find("Trash", m.ID)); n != 1 || k != 0 {
			t.Fatalf("copies in INBOX, Trash = %d, %d; want 1, 0", n, k)
		}
		e.waitSynced("1001")
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
