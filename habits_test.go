package um_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// clock is a settable Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// session stands for an IMAP session: what imapserver hands WithSource.
type session struct{ name string }

func TestDeleteTimeSeenIsNotHeard(t *testing.T) {
	seenAdd := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}
	deletedAdd := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted}
	tests := []struct {
		name      string
		do        func(t *testing.T, f *fixture, c *clock, id uuid.UUID)
		wantHeard bool
	}{
		{"a client marks it read and moves it to Trash at once (Thunderbird's Delete)", func(t *testing.T, f *fixture, c *clock, id uuid.UUID) {
			tb := um.WithSource(ctx, &session{"thunderbird"})
			mustSetFlags(t, f, tb, id, seenAdd)
			c.advance(200 * time.Millisecond)
			mustMove(t, f, tb, id, um.Trash)
		}, false},
		{"a client marks it read, then sets \\Deleted", func(t *testing.T, f *fixture, c *clock, id uuid.UUID) {
			tb := um.WithSource(ctx, &session{"outlook"})
			mustSetFlags(t, f, tb, id, seenAdd)
			mustSetFlags(t, f, tb, id, deletedAdd)
			mustMove(t, f, ctx, id, um.Trash)
		}, false},
		{"a client sets \\Seen and \\Deleted in one STORE", func(t *testing.T, f *fixture, c *clock, id uuid.UUID) {
			tb := um.WithSource(ctx, &session{"mutt"})
			mustSetFlags(t, f, tb, id, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard | um.FlagDeleted})
			mustMove(t, f, ctx, id, um.Trash)
		}, false},
		{"a client marks it read and deletes it after the window: it was read", func(t *testing.T, f *fixture, c *clock, id uuid.UUID) {
			tb := um.WithSource(ctx, &session{"thunderbird"})
			mustSetFlags(t, f, tb, id, seenAdd)
			c.advance(um.DeleteSeenWindow + time.Second)
			mustMove(t, f, tb, id, um.Trash)
		}, true},
		{"one client marks it read, another deletes it", func(t *testing.T, f *fixture, c *clock, id uuid.UUID) {
			mustSetFlags(t, f, um.WithSource(ctx, &session{"phone app"}), id, seenAdd)
			mustMove(t, f, um.WithSource(ctx, &session{"thunderbird"}), id, um.Trash)
		}, true},
		{"the phone played it, then a client deletes it", func(t *testing.T, f *fixture, c *clock, id uuid.UUID) {
			tb := um.WithSource(ctx, &session{"thunderbird"})
			if err := f.mb.MarkHeard(ctx, id); err != nil {
				t.Fatal(err)
			}
			mustSetFlags(t, f, tb, id, seenAdd)
			mustMove(t, f, tb, id, um.Trash)
		}, true},
		{"a client marks it read, unread, and deletes it", func(t *testing.T, f *fixture, c *clock, id uuid.UUID) {
			tb := um.WithSource(ctx, &session{"thunderbird"})
			mustSetFlags(t, f, tb, id, seenAdd)
			mustSetFlags(t, f, tb, id, um.FlagOp{Mode: um.FlagsRemove, Flags: um.FlagHeard})
			mustMove(t, f, tb, id, um.Trash)
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{now: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
			f := newFixture(t, um.Options{Now: c.Now})
			m := f.deposit(t, "+4930123", false)
			tt.do(t, f, c, m.ID)
			back, err := f.mb.Undelete(ctx, m.ID)
			if err != nil {
				t.Fatal(err)
			}
			if back.Heard() != tt.wantHeard {
				t.Errorf("after Undelete Heard() = %v, want %v", back.Heard(), tt.wantHeard)
			}
			f.svc.FlushMWI()
			wantLamp := !tt.wantHeard
			if st := f.mwi.last(t); st.Waiting() != wantLamp {
				t.Errorf("lamp after Undelete = %v (%v), want lit %v", st.Waiting(), st, wantLamp)
			}
		})
	}
}

func TestCopyToTrashTakesBackSeen(t *testing.T) {
	f := newFixture(t, um.Options{})
	m := f.deposit(t, "100", false)
	outlook := um.WithSource(ctx, &session{"outlook"})
	// Outlook's delete: read, copy to its deleted-items folder, \Deleted.
	mustSetFlags(t, f, outlook, m.ID, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard})
	copies, err := f.mb.Copy(outlook, []uuid.UUID{m.ID}, um.Trash)
	if err != nil {
		t.Fatal(err)
	}
	mustSetFlags(t, f, outlook, m.ID, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted})
	if _, err := f.mb.Expunge(outlook, um.Inbox, nil); err != nil {
		t.Fatal(err)
	}
	if len(copies) != 1 || copies[0].Heard() {
		t.Fatalf("Copy to Trash = %+v, want one unheard copy", copies)
	}
	back, err := f.mb.Undelete(ctx, copies[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if back.Heard() {
		t.Errorf("the copy came back heard; the client's \\Seen before its delete does not count")
	}
}

func TestBulkDeleteKeepsUnheardUnheard(t *testing.T) {
	f := newFixture(t, um.Options{})
	played := f.deposit(t, "100", false)
	if err := f.mb.MarkHeard(ctx, played.ID); err != nil {
		t.Fatal(err)
	}
	var ids []uuid.UUID
	for _, caller := range []string{"101", "102", "103"} {
		ids = append(ids, f.deposit(t, caller, false).ID)
	}
	all := append([]uuid.UUID{played.ID}, ids...)
	tb := um.WithSource(ctx, &session{"thunderbird"})
	if _, err := f.mb.SetFlags(tb, all, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}); err != nil {
		t.Fatal(err)
	}
	moved, err := f.mb.Move(tb, all, um.Trash)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range moved {
		if want := m.ID == played.ID; m.Heard() != want {
			t.Errorf("message %d in Trash: Heard() = %v, want %v (only the one played was heard)", m.UID, m.Heard(), want)
		}
	}
	for _, id := range all {
		if _, err := f.mb.Undelete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	f.svc.FlushMWI()
	if st := f.mwi.last(t); st.String() != "3/1 (0/0)" {
		t.Errorf("MWI after undeleting all = %v, want 3/1 (0/0)", st)
	}
}

// rendering returns the e-mail a mail client gets for m, as it would hand
// it back.
func rendering(t *testing.T, f *fixture, m um.Message) []byte {
	t.Helper()
	rc, err := f.mb.OpenAudio(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var b bytes.Buffer
	if _, err := um.RenderEmail(m, um.RenderOptions{Mailbox: f.mb.Name()}).WriteTo(&b, rc); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestVoicemailComesBackToInboxByAppend(t *testing.T) {
	f := newFixture(t, um.Options{})
	if _, err := f.mb.CreateFolder(ctx, "Archive"); err != nil {
		t.Fatal(err)
	}
	archived := f.deposit(t, "100", true)
	trashed := f.deposit(t, "101", false)
	kept := f.deposit(t, "102", false)
	if err := f.mb.MarkHeard(ctx, archived.ID); err != nil {
		t.Fatal(err)
	}
	mustMove(t, f, ctx, archived.ID, "Archive")
	if err := f.mb.Delete(ctx, trashed.ID); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		m         um.Message
		wantHeard bool
	}{
		{"from a user folder", archived, true},
		{"from Trash", trashed, false},
		{"already in INBOX", kept, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cur, _ := f.mb.Message(ctx, tt.m.ID)
			raw := rendering(t, f, cur)
			// The client's copy says read: the voicemail's own state wins.
			got, err := f.mb.Append(ctx, "inbox", um.Message{Flags: um.FlagHeard}, bytes.NewReader(raw))
			if err != nil {
				t.Fatalf("Append(INBOX, a voicemail of this mailbox) = %v, want it back", err)
			}
			if got.ID != tt.m.ID || got.Folder != um.Inbox || got.Raw || got.Heard() != tt.wantHeard {
				t.Errorf("Append() = id %v folder %q raw %v heard %v, want id %v INBOX voicemail heard %v", got.ID, got.Folder, got.Raw, got.Heard(), tt.m.ID, tt.wantHeard)
			}
		})
	}
	inbox, _ := f.mb.List(ctx, um.Inbox)
	if len(inbox) != 3 {
		t.Errorf("INBOX holds %d messages, want the 3 voicemails once each", len(inbox))
	}
	for _, name := range []string{"Archive", um.Trash} {
		if msgs, _ := f.mb.List(ctx, name); len(msgs) != 0 {
			t.Errorf("%s holds %d messages after they came back, want 0", name, len(msgs))
		}
	}
	f.svc.FlushMWI()
	if st := f.mwi.last(t); st.String() != "2/1 (0/1)" {
		t.Errorf("MWI = %v, want 2/1 (0/1)", st)
	}
}

func TestInboxRefusesEmail(t *testing.T) {
	f := newFixture(t, um.Options{})
	vm := f.deposit(t, "100", false)
	other, err := f.svc.CreateMailbox(ctx, "1002")
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := other.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(recording(8000)), CallerNumber: "200", Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.mb.CreateFolder(ctx, "Drafts"); err != nil {
		t.Fatal(err)
	}
	draft, err := f.mb.Append(ctx, "Drafts", um.Message{Flags: um.FlagDraft}, strings.NewReader("Subject: call back\r\n\r\nnotes\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	header := func(id string) string {
		return "Subject: looks like voicemail\r\nX-Um-Message-Id: " + id + "\r\n\r\nbody\r\n"
	}
	for _, tt := range []struct{ name, mail string }{
		{"plain e-mail", "Subject: hello\r\nFrom: a@example.com\r\n\r\nhi\r\n"},
		{"an id no message has", header(uuid.NewString())},
		{"the id of another mailbox's voicemail", header(theirs.ID.String())},
		{"the id of an e-mail, not a voicemail", header(draft.ID.String())},
		{"a malformed id", header("not-a-uuid")},
		{"two ids", "X-Um-Message-Id: " + vm.ID.String() + "\r\nX-Um-Message-Id: " + vm.ID.String() + "\r\n\r\n"},
		{"no header at all", "just text"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.mb.Append(ctx, um.Inbox, um.Message{}, strings.NewReader(tt.mail))
			if !errors.Is(err, um.ErrNotVoice) || !strings.Contains(err.Error(), um.InboxRefusal) {
				t.Errorf("Append(INBOX) = %v, want ErrNotVoice saying %q", err, um.InboxRefusal)
			}
		})
	}
	for _, op := range []string{"move", "copy"} {
		var err error
		if op == "move" {
			_, err = f.mb.Move(ctx, []uuid.UUID{vm.ID, draft.ID}, um.Inbox)
		} else {
			_, err = f.mb.Copy(ctx, []uuid.UUID{draft.ID}, um.Inbox)
		}
		if !errors.Is(err, um.ErrNotVoice) || !strings.Contains(err.Error(), um.InboxRefusal) {
			t.Errorf("%s of a draft to INBOX = %v, want ErrNotVoice saying %q", op, err, um.InboxRefusal)
		}
	}
	inbox, _ := f.mb.List(ctx, um.Inbox)
	drafts, _ := f.mb.List(ctx, "Drafts")
	if len(inbox) != 1 || inbox[0].ID != vm.ID || len(drafts) != 1 {
		t.Errorf("after refusals INBOX = %d messages, Drafts = %d; want the voicemail alone and the draft kept", len(inbox), len(drafts))
	}
}

func TestEmailCopyOfVoicemailBringsItBack(t *testing.T) {
	for _, op := range []string{"move", "copy"} {
		t.Run(op, func(t *testing.T) {
			f := newFixture(t, um.Options{})
			if _, err := f.mb.CreateFolder(ctx, "Saved"); err != nil {
				t.Fatal(err)
			}
			vm := f.deposit(t, "100", false)
			raw := rendering(t, f, vm)
			if err := f.mb.Delete(ctx, vm.ID); err != nil {
				t.Fatal(err)
			}
			// A client filed its own copy in Saved (a move from another
			// account), then moves or copies that copy to INBOX.
			copyMail, err := f.mb.Append(ctx, "Saved", um.Message{}, bytes.NewReader(raw))
			if err != nil {
				t.Fatal(err)
			}
			var got []um.Message
			if op == "move" {
				got, err = f.mb.Move(ctx, []uuid.UUID{copyMail.ID}, um.Inbox)
			} else {
				got, err = f.mb.Copy(ctx, []uuid.UUID{copyMail.ID}, um.Inbox)
			}
			if err != nil {
				t.Fatalf("%s of the e-mail copy to INBOX = %v", op, err)
			}
			if len(got) != 1 || got[0].ID != vm.ID || got[0].Folder != um.Inbox || got[0].Heard() {
				t.Fatalf("%s returned %+v, want voicemail %v back in INBOX, unheard", op, got, vm.ID)
			}
			saved, _ := f.mb.List(ctx, "Saved")
			if wantSaved := map[string]int{"move": 0, "copy": 1}[op]; len(saved) != wantSaved {
				t.Errorf("Saved holds %d messages after %s, want %d", len(saved), op, wantSaved)
			}
			if trash, _ := f.mb.List(ctx, um.Trash); len(trash) != 0 {
				t.Errorf("Trash holds %d messages, want 0: the voicemail came back", len(trash))
			}
		})
	}
}

func TestClientStarIsUrgency(t *testing.T) {
	f := newFixture(t, um.Options{})
	plain := f.deposit(t, "100", false)
	urgent := f.deposit(t, "101", true)
	client := um.WithSource(ctx, &session{"thunderbird"})
	mustSetFlags(t, f, client, plain.ID, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagFlagged})
	f.svc.FlushMWI()
	if st := f.mwi.last(t); st.String() != "2/0 (2/0)" {
		t.Errorf("MWI after a client starred the plain message = %v, want 2/0 (2/0)", st)
	}
	mustSetFlags(t, f, client, urgent.ID, um.FlagOp{Mode: um.FlagsRemove, Flags: um.FlagFlagged})
	f.svc.FlushMWI()
	if st := f.mwi.last(t); st.String() != "2/0 (1/0)" {
		t.Errorf("MWI after a client unstarred the urgent message = %v, want 2/0 (1/0)", st)
	}
	if m, _ := f.mb.Message(ctx, urgent.ID); m.IsUrgent() {
		t.Errorf("IsUrgent() of the unstarred message = true, want false")
	}
	// And the reverse: the phone's urgency is the client's star.
	changed, err := f.mb.SetUrgent(ctx, true, urgent.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 1 || !changed[0].Flags.Has(um.FlagFlagged) || !changed[0].IsUrgent() {
		t.Errorf("SetUrgent(true) = %+v, want the message \\Flagged", changed)
	}
	f.svc.FlushMWI()
	if st := f.mwi.last(t); st.String() != "2/0 (2/0)" {
		t.Errorf("MWI after SetUrgent = %v, want 2/0 (2/0)", st)
	}
}

func mustSetFlags(t *testing.T, f *fixture, c context.Context, id uuid.UUID, op um.FlagOp) {
	t.Helper()
	if _, err := f.mb.SetFlags(c, []uuid.UUID{id}, op); err != nil {
		t.Fatal(err)
	}
}

func mustMove(t *testing.T, f *fixture, c context.Context, id uuid.UUID, folder string) {
	t.Helper()
	if _, err := f.mb.Move(c, []uuid.UUID{id}, folder); err != nil {
		t.Fatal(err)
	}
}

// flagsSeenBy returns the last flags each message had in the changes sub
// received.
func flagsSeenBy(t *testing.T, sub *um.Subscription) map[uuid.UUID]um.Flags {
	t.Helper()
	changes, err := sub.Next()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[uuid.UUID]um.Flags)
	for _, c := range changes {
		for _, e := range c.Events {
			if e.Kind == um.EventFlags {
				out[e.Message.ID] = e.Message.Flags
			}
		}
	}
	return out
}

func TestAutoDisplayAroundDeleteIsNotHeard(t *testing.T) {
	seenAdd := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}
	tests := []struct {
		name      string
		do        func(t *testing.T, f *fixture, c *clock, tb context.Context, gone, next uuid.UUID)
		wantHeard bool
	}{
		{"displayed just before the delete reaches the server (Thunderbird)", func(t *testing.T, f *fixture, c *clock, tb context.Context, gone, next uuid.UUID) {
			mustSetFlags(t, f, tb, gone, seenAdd)
			mustSetFlags(t, f, tb, next, seenAdd)
			mustMove(t, f, tb, gone, um.Trash)
		}, false},
		{"displayed just after the delete", func(t *testing.T, f *fixture, c *clock, tb context.Context, gone, next uuid.UUID) {
			mustSetFlags(t, f, tb, gone, seenAdd)
			mustMove(t, f, tb, gone, um.Trash)
			c.advance(300 * time.Millisecond)
			mustSetFlags(t, f, tb, next, seenAdd)
		}, false},
		{"displayed just after setting \\Deleted", func(t *testing.T, f *fixture, c *clock, tb context.Context, gone, next uuid.UUID) {
			mustSetFlags(t, f, tb, gone, seenAdd)
			mustSetFlags(t, f, tb, gone, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted})
			mustSetFlags(t, f, tb, next, seenAdd)
		}, false},
		{"the one deleted was heard already (Thunderbird asks for \\Seen anyway)", func(t *testing.T, f *fixture, c *clock, tb context.Context, gone, next uuid.UUID) {
			if err := f.mb.MarkHeard(ctx, gone); err != nil {
				t.Fatal(err)
			}
			mustSetFlags(t, f, tb, gone, seenAdd)
			mustSetFlags(t, f, tb, next, seenAdd)
			mustMove(t, f, tb, gone, um.Trash)
		}, false},
		{"a sync client stores \\Seen on one and \\Deleted on another (mbsync): heard", func(t *testing.T, f *fixture, c *clock, tb context.Context, gone, next uuid.UUID) {
			mustSetFlags(t, f, tb, next, seenAdd)
			mustSetFlags(t, f, tb, gone, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted})
			if _, err := f.mb.Expunge(tb, um.Inbox, nil); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"a client syncs what was read, the deleted one last (neomutt): heard", func(t *testing.T, f *fixture, c *clock, tb context.Context, gone, next uuid.UUID) {
			mustSetFlags(t, f, tb, next, seenAdd)
			mustSetFlags(t, f, tb, gone, seenAdd)
			if _, err := f.mb.Copy(tb, []uuid.UUID{gone}, um.Trash); err != nil {
				t.Fatal(err)
			}
			mustSetFlags(t, f, tb, gone, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted})
		}, true},
		{"opened well after the delete: heard", func(t *testing.T, f *fixture, c *clock, tb context.Context, gone, next uuid.UUID) {
			mustSetFlags(t, f, tb, gone, seenAdd)
			mustMove(t, f, tb, gone, um.Trash)
			c.advance(um.AutoDisplayWindow + time.Second)
			mustSetFlags(t, f, tb, next, seenAdd)
		}, true},
		{"opened by another client around the delete: heard", func(t *testing.T, f *fixture, c *clock, tb context.Context, gone, next uuid.UUID) {
			mustSetFlags(t, f, tb, gone, seenAdd)
			mustMove(t, f, tb, gone, um.Trash)
			mustSetFlags(t, f, um.WithSource(ctx, &session{"phone app"}), next, seenAdd)
		}, true},
		{"played on the phone around the delete: heard", func(t *testing.T, f *fixture, c *clock, tb context.Context, gone, next uuid.UUID) {
			mustSetFlags(t, f, tb, gone, seenAdd)
			mustMove(t, f, tb, gone, um.Trash)
			if err := f.mb.MarkHeard(ctx, next); err != nil {
				t.Fatal(err)
			}
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clock{now: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
			f := newFixture(t, um.Options{Now: c.Now})
			gone := f.deposit(t, "100", false)
			next := f.deposit(t, "101", false)
			client := &session{"thunderbird"}
			sub := f.svc.Subscribe("1001", um.SubscribeOptions{Source: client})
			defer sub.Close()
			tt.do(t, f, c, um.WithSource(ctx, client), gone.ID, next.ID)
			m, err := f.mb.Message(ctx, next.ID)
			if err != nil {
				t.Fatal(err)
			}
			if m.Heard() != tt.wantHeard {
				t.Errorf("the next message: Heard() = %v, want %v", m.Heard(), tt.wantHeard)
			}
			f.svc.FlushMWI()
			if st := f.mwi.last(t); st.Waiting() == tt.wantHeard {
				t.Errorf("lamp = %v, want lit %v", st, !tt.wantHeard)
			}
			if !tt.wantHeard {
				// The client that displayed it is told it is unread.
				if flags, ok := flagsSeenBy(t, sub)[next.ID]; !ok || flags.Has(um.FlagHeard) {
					t.Errorf("the displaying client was told flags %v (told: %v), want it told \\Seen is gone", flags, ok)
				}
			}
		})
	}
}
