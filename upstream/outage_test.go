package upstream_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/upstream"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// TestForcedRetry drops the connection after an APPEND succeeded, before
// its answer is used: the retry must find the copy, not make a second.
func TestForcedRetry(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	var drops atomic.Int32
	upstream.SetAfterAppend(e.eng, func() bool { return drops.Add(1) == 1 })
	mb := e.sync("1001", "")
	mc := newMailClient(t, d, "1001")

	m := deposit(t, mb, "100")
	eventually(t, "answer dropped once and synced again", func() bool {
		return drops.Load() >= 1 && e.eng.Status("1001").Connected
	})
	e.waitSynced("1001")
	if n := len(mc.find("INBOX", m.ID)); n != 1 {
		t.Fatalf("copies after a lost APPEND answer = %d, want 1", n)
	}
	if drops.Load() != 1 {
		t.Fatalf("APPENDs = %d, want 1 (the retry must search, not append)", drops.Load())
	}
}

// TestHeardAfterLostAppendAnswer: a voicemail heard on the phone after its
// APPEND reached the server, whose answer was lost, stays heard: the copy
// found again is merged against the flags it was uploaded with, so the
// phone's change is not taken for an unheard copy found without a base.
func TestHeardAfterLostAppendAnswer(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	ctx := context.Background()
	mb, err := e.svc.EnsureMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	var drops atomic.Int32
	upstream.SetAfterAppend(e.eng, func() bool {
		if drops.Add(1) != 1 {
			return false
		}
		// Heard while the answer is on its way, then the answer is lost.
		msgs, err := mb.List(ctx, um.Inbox)
		if err != nil || len(msgs) != 1 {
			t.Errorf("INBOX at the APPEND: %v, %v", msgs, err)
			return true
		}
		if err := mb.MarkHeard(ctx, msgs[0].ID); err != nil {
			t.Error(err)
		}
		return true
	})
	e.sync("1001", "")
	mc := newMailClient(t, d, "1001")

	m := deposit(t, mb, "100")
	eventually(t, "answer dropped once and synced again", func() bool {
		return drops.Load() >= 1 && e.eng.Status("1001").Connected
	})
	e.waitSynced("1001")
	e.waitSynced("1001")
	uids := mc.find("INBOX", m.ID)
	if len(uids) != 1 {
		t.Fatalf("copies after a lost APPEND answer = %d, want 1", len(uids))
	}
	if !hasFlag(mc.flags("INBOX", uids[0]), imap.FlagSeen) {
		t.Fatalf("heard on the phone, copy's flags %v: want \\Seen", mc.flags("INBOX", uids[0]))
	}
	if got, err := mb.Message(ctx, m.ID); err != nil || !got.Heard() {
		t.Fatalf("voicemail heard on the phone is unheard after the sync: %+v, %v", got, err)
	}
}

// TestLostStateNoDuplicate restarts the engine without its state file (a
// crash before the state was written, or a lost disk): copies are found
// again by their header.
func TestLostStateNoDuplicate(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	mb := e.sync("1001", "")
	mc := newMailClient(t, d, "1001")
	ctx := context.Background()
	m1, m2 := deposit(t, mb, "1"), deposit(t, mb, "2")
	if err := mb.MarkHeard(ctx, m1.ID); err != nil {
		t.Fatal(err)
	}
	e.waitSynced("1001")
	e.eng.Close()
	e.loseState("1001")
	e.startEngine()
	if err := e.eng.Add(ctx, e.config("1001", "")); err != nil {
		t.Fatal(err)
	}
	e.waitSynced("1001")
	for _, id := range []uuid.UUID{m1.ID, m2.ID} {
		if n := len(mc.find("INBOX", id)); n != 1 {
			t.Fatalf("copies of %s = %d, want 1", id, n)
		}
	}
	if !hasFlag(mc.flags("INBOX", mc.find("INBOX", m1.ID)[0]), imap.FlagSeen) {
		t.Fatalf("heard message lost \\Seen upstream")
	}
}

// TestExistingMessagesCopied enables sync on a mailbox with voicemail.
func TestExistingMessagesCopied(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	ctx := context.Background()
	mb, err := e.svc.CreateMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	m1, m2 := deposit(t, mb, "1"), deposit(t, mb, "2")
	if err := mb.MarkHeard(ctx, m2.ID); err != nil {
		t.Fatal(err)
	}
	e.sync("1001", "Voicemail")
	mc := newMailClient(t, d, "1001")
	u1, u2 := mc.find("Voicemail", m1.ID), mc.find("Voicemail", m2.ID)
	if len(u1) != 1 || len(u2) != 1 {
		t.Fatalf("copies = %d and %d, want 1 and 1", len(u1), len(u2))
	}
	if hasFlag(mc.flags("Voicemail", u1[0]), imap.FlagSeen) || !hasFlag(mc.flags("Voicemail", u2[0]), imap.FlagSeen) {
		t.Fatalf("heard state not copied: unheard %v, heard %v", mc.flags("Voicemail", u1[0]), mc.flags("Voicemail", u2[0]))
	}
}

// TestServerKilled kills Dovecot with SIGKILL while the engine appends,
// changes both sides during the outage, and restarts it: every change
// arrives, once.
func TestServerKilled(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	mb := e.sync("1001", "")
	ctx := context.Background()
	mc := newMailClient(t, d, "1001")
	mc.appendMail("INBOX", "keep me", imap.FlagDeleted)
	old := deposit(t, mb, "old")
	heardUp := deposit(t, mb, "heard-upstream")
	e.waitSynced("1001")
	huUID := mc.find("INBOX", heardUp.ID)[0]

	// Deposits in flight when the server dies.
	var burst []um.Message
	for i := 0; i < 10; i++ {
		burst = append(burst, deposit(t, mb, "burst"))
	}
	d.Kill()
	mc.c.Close()
	eventually(t, "disconnect seen", func() bool { return !e.eng.Status("1001").Connected })

	// Changes on the phone while the server is away.
	if err := mb.MarkHeard(ctx, old.ID, burst[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := mb.Delete(ctx, burst[1].ID); err != nil {
		t.Fatal(err)
	}
	during := deposit(t, mb, "during")
	eventually(t, "lag and error during the outage", func() bool {
		s := e.eng.Status("1001")
		return s.Lag > 0 && s.LastError != nil && !s.Connected
	})
	var se error
	ctxShort, cancel := context.WithTimeout(ctx, 2*time.Second)
	se = e.eng.Sync(ctxShort, "1001")
	cancel()
	if se == nil {
		t.Fatalf("Sync() during outage = nil, want an error")
	}

	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	// A change made upstream by the user right after the restart.
	mc = newMailClient(t, d, "1001")
	mc.store("INBOX", huUID, imap.StoreFlagsAdd, imap.FlagSeen)
	e.waitSynced("1001")
	e.waitSynced("1001")

	for _, m := range append(append([]um.Message{old, heardUp, during}, burst[0]), burst[2:]...) {
		if n := len(mc.find("INBOX", m.ID)); n != 1 {
			t.Fatalf("copies of %s (%s) = %d, want 1", m.ID, m.CallerNumber, n)
		}
	}
	if n := len(mc.find("INBOX", burst[1].ID)); n != 0 {
		t.Fatalf("deleted message still in INBOX upstream (%d copies)", n)
	}
	for _, m := range []um.Message{old, burst[0]} {
		if !hasFlag(mc.flags("INBOX", mc.find("INBOX", m.ID)[0]), imap.FlagSeen) {
			t.Fatalf("heard during the outage, not \\Seen upstream: %s", m.CallerNumber)
		}
	}
	eventually(t, "upstream \\Seen reached the phone", func() bool {
		got, err := mb.Message(ctx, heardUp.ID)
		return err == nil && got.Heard()
	})
	st, _ := mb.MWI(ctx)
	if want := 1 + 10 - 2; st.New != want { // during + burst minus heard and deleted
		t.Fatalf("MWI New = %d, want %d", st.New, want)
	}
	mc.sel("INBOX")
	sd, err := mc.c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: "keep me"}}}, nil).Wait()
	if err != nil || len(sd.AllUIDs()) != 1 {
		t.Fatalf("the user's own mail is gone: %v %v", sd, err)
	}
	if s := e.eng.Status("1001"); !s.Connected || s.Lag != 0 || s.LastError != nil {
		t.Fatalf("Status() after recovery = %+v", s)
	}
}

// TestEngineDownUpstreamChanges applies changes made upstream while the PBX
// was down, at its restart.
func TestEngineDownUpstreamChanges(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	mb := e.sync("1001", "")
	ctx := context.Background()
	a, b := deposit(t, mb, "a"), deposit(t, mb, "b")
	e.waitSynced("1001")
	e.eng.Close()

	mc := newMailClient(t, d, "1001")
	mc.store("INBOX", mc.find("INBOX", a.ID)[0], imap.StoreFlagsAdd, imap.FlagSeen)
	mc.sel("INBOX")
	if _, err := mc.c.Move(imap.UIDSetNum(mc.find("INBOX", b.ID)[0]), "Trash").Wait(); err != nil {
		t.Fatal(err)
	}
	e.startEngine()
	if err := e.eng.Add(ctx, e.config("1001", "")); err != nil {
		t.Fatal(err)
	}
	e.waitSynced("1001")
	if got, _ := mb.Message(ctx, a.ID); !got.Heard() {
		t.Fatalf("\\Seen set while down not applied")
	}
	if got, _ := mb.Message(ctx, b.ID); got.Folder != um.Trash {
		t.Fatalf("message moved to Trash while down is in %q, want Trash", got.Folder)
	}
	if st, _ := mb.MWI(ctx); st.New != 0 {
		t.Fatalf("MWI New = %d, want 0", st.New)
	}
}

// TestUIDValidityChange deletes and recreates the folder upstream and puts
// the copies back (a restore): they are associated again, not duplicated.
func TestUIDValidityChange(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	mb := e.sync("1001", "Voicemail")
	ctx := context.Background()
	mc := newMailClient(t, d, "1001")
	a, b := deposit(t, mb, "a"), deposit(t, mb, "b")
	if err := mb.MarkHeard(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	e.waitSynced("1001")
	before := mc.sel("Voicemail").UIDValidity

	// Save the copies as a backup would, while the PBX is stopped.
	if err := e.eng.Remove("1001"); err != nil {
		t.Fatal(err)
	}
	mc.sel("Voicemail")
	section := &imap.FetchItemBodySection{Peek: true}
	bufs, err := mc.c.Fetch(imap.UIDSetNum(mc.find("Voicemail", a.ID)[0], mc.find("Voicemail", b.ID)[0]), &imap.FetchOptions{Flags: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil || len(bufs) != 2 {
		t.Fatalf("fetch copies: %v (%d)", err, len(bufs))
	}
	mc.c.Unselect().Wait()
	if err := mc.c.Delete("Voicemail").Wait(); err != nil {
		t.Fatal(err)
	}
	if err := mc.c.Create("Voicemail", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	mc.appendMail("Voicemail", "my own mail")
	for _, buf := range bufs {
		body := buf.FindBodySection(section)
		cmd := mc.c.Append("Voicemail", int64(len(body)), &imap.AppendOptions{Flags: buf.Flags})
		cmd.Write(body)
		cmd.Close()
		if _, err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if after := mc.sel("Voicemail").UIDValidity; after == before {
		t.Fatalf("UIDVALIDITY did not change (%d)", after)
	}
	c := deposit(t, mb, "c") // arrives while sync is off

	if err := e.eng.Add(ctx, e.config("1001", "Voicemail")); err != nil {
		t.Fatal(err)
	}
	e.waitSynced("1001")
	for _, m := range []um.Message{a, b, c} {
		if n := len(mc.find("Voicemail", m.ID)); n != 1 {
			t.Fatalf("copies of %s = %d, want 1", m.CallerNumber, n)
		}
	}
	if n := mc.count("Voicemail"); n != 4 {
		t.Fatalf("folder holds %d messages, want 4 (3 voicemails, 1 own mail)", n)
	}
	// The association works under the new UIDVALIDITY both ways.
	if err := mb.MarkHeard(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "\\Seen on the re-associated copy", func() bool {
		return hasFlag(mc.flags("Voicemail", mc.find("Voicemail", b.ID)[0]), imap.FlagSeen)
	})
	if got, _ := mb.Message(ctx, a.ID); !got.Heard() {
		t.Fatalf("heard state lost in the re-association")
	}
}

// TestNoTrashExpungesOnlyVoicemail deletes with \Deleted and UID EXPUNGE in
// a folder that holds the user's own mail marked \Deleted.
func TestNoTrashExpungesOnlyVoicemail(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	ctx := context.Background()
	mb, err := e.svc.EnsureMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	mc := newMailClient(t, d, "1001")
	mc.appendMail("INBOX", "mine, deleted", imap.FlagDeleted)
	mc.appendMail("INBOX", "mine")
	cfg := e.config("1001", "")
	cfg.NoTrash = true
	if err := e.eng.Add(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	m := deposit(t, mb, "x")
	e.waitSynced("1001")
	if n := len(mc.find("INBOX", m.ID)); n != 1 {
		t.Fatalf("copies = %d, want 1", n)
	}
	if err := mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "voicemail expunged upstream", func() bool { return len(mc.find("INBOX", m.ID)) == 0 })
	if n := mc.count("INBOX"); n != 2 {
		t.Fatalf("INBOX holds %d, want the user's 2 messages", n)
	}
	if n := len(mc.find("Trash", m.ID)); n != 0 {
		t.Fatalf("NoTrash moved the copy to Trash")
	}
}

// TestModeConflict: a forwarded mailbox cannot also sync.
func TestModeConflict(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	ctx := context.Background()
	if _, err := e.svc.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.ClaimDelivery("1001", "email-forward"); err != nil {
		t.Fatal(err)
	}
	err := e.eng.Add(ctx, e.config("1001", ""))
	if !errors.Is(err, um.ErrModeConflict) {
		t.Fatalf("Add() = %v, want ErrModeConflict", err)
	}
	if s := e.eng.Status("1001"); s.Configured {
		t.Fatalf("Status() = %+v after a refused Add", s)
	}
	e.svc.ReleaseDelivery("1001", "email-forward")
	if err := e.eng.Add(ctx, e.config("1001", "")); err != nil {
		t.Fatalf("Add() after release = %v", err)
	}
	if err := e.svc.ClaimDelivery("1001", "email-forward"); !errors.Is(err, um.ErrModeConflict) {
		t.Fatalf("ClaimDelivery(email-forward) on a synced mailbox = %v, want ErrModeConflict", err)
	}
	if err := e.eng.Add(ctx, e.config("1001", "")); !errors.Is(err, um.ErrExists) {
		t.Fatalf("second Add() = %v, want ErrExists", err)
	}

	// The claim outlives the engine: a PBX restarting (or another node)
	// cannot forward the mailbox meanwhile. Remove gives it up.
	if err := e.eng.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.ClaimDelivery("1001", "email-forward"); !errors.Is(err, um.ErrModeConflict) {
		t.Fatalf("ClaimDelivery(email-forward) after the engine's Close = %v, want ErrModeConflict", err)
	}
	again, err := upstream.New(e.svc, nil, &testOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.Add(ctx, e.config("1001", "")); err != nil {
		t.Fatalf("Add() on a restarted engine = %v", err)
	}
	if err := again.Remove("1001"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.ClaimDelivery("1001", "email-forward"); err != nil {
		t.Fatalf("ClaimDelivery(email-forward) after Remove = %v", err)
	}
}

// TestOAuth2ImplicitTLS authenticates with a bearer token over implicit
// TLS, and refuses a server whose certificate it cannot verify.
func TestOAuth2ImplicitTLS(t *testing.T) {
	d := startDovecot(t, "1001", "1002")
	e := newEnv(t, d)
	ctx := context.Background()
	var calls atomic.Int32
	cfg := upstream.Config{
		Mailbox: "1001", Addr: d.TLSAddr, TLSConfig: d.TLSConfig(), Username: "1001",
		// This Dovecot checks bearer tokens against its passwd file.
		Credentials: upstream.OAuth2{Token: func(context.Context) (string, error) { calls.Add(1); return "pass1001", nil }},
	}
	mb, _ := e.svc.EnsureMailbox(ctx, "1001")
	if err := e.eng.Add(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	e.waitSynced("1001")
	m := deposit(t, mb, "x")
	mc := newMailClient(t, d, "1001")
	eventually(t, "deposit upstream", func() bool { return len(mc.find("INBOX", m.ID)) == 1 })
	if calls.Load() < 1 {
		t.Fatalf("token source not called")
	}

	// Untrusted certificate: never connected, the error says why.
	if _, err := e.svc.EnsureMailbox(ctx, "1002"); err != nil {
		t.Fatal(err)
	}
	bad := e.config("1002", "")
	bad.TLSConfig = nil
	if err := e.eng.Add(ctx, bad); err != nil {
		t.Fatal(err)
	}
	eventually(t, "certificate error reported", func() bool {
		s := e.eng.Status("1002")
		return s.Failures > 0 && s.LastError != nil
	})
	if s := e.eng.Status("1002"); s.Connected || s.LastSync != (time.Time{}) {
		t.Fatalf("Status() with an untrusted certificate = %+v", s)
	}
}

// TestSharedReconnect: workers of one server address back off for a
// minute, far longer than the test waits, so they can only come back in
// time because the one worker probing the address wakes them when it gets
// through.
func TestSharedReconnect(t *testing.T) {
	users := []string{"1001", "1002", "1003", "1004", "1005", "1006"}
	d := startDovecot(t, users...)
	opts := testOptions
	opts.MinBackoff, opts.MaxBackoff, opts.ProbeInterval = time.Minute, time.Minute, 100*time.Millisecond
	e := newEnvOpts(t, d, opts, nil)
	mbs := make([]*um.Mailbox, len(users))
	for i, u := range users {
		mbs[i] = e.sync(u, "")
	}

	d.Kill()
	eventually(t, "every worker disconnected and failed, one probing", func() bool {
		probing := false
		for _, u := range users {
			s := e.eng.Status(u)
			if s.Connected || s.Failures < 1 || s.LastError == nil {
				return false
			}
			probing = probing || s.Failures >= 2
		}
		return probing
	})
	waiting := 0
	for _, u := range users {
		if e.eng.Status(u).Failures == 1 {
			waiting++
		}
	}
	if waiting < len(users)-1 {
		t.Fatalf("%d of %d workers wait in backoff, want all but the prober", waiting, len(users))
	}
	msgs := make([]um.Message, len(users))
	for i, mb := range mbs {
		msgs[i] = deposit(t, mb, "outage")
	}

	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		eventually(t, "caught up after the outage: "+u, func() bool {
			s := e.eng.Status(u)
			return s.Connected && s.Lag == 0 && s.LastError == nil
		})
	}
	for i, u := range users {
		mc := newMailClient(t, d, u)
		if n := len(mc.find("INBOX", msgs[i].ID)); n != 1 {
			t.Fatalf("copies of %s's outage deposit = %d, want 1", u, n)
		}
	}
}
