package imapserver

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
)

func TestFetchHeadersReadsNoAudio(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 3; i++ {
		e.deposit("1001", "+4930123456", 100_000)
	}
	c := e.dial("alice", nil)
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if sel.NumMessages != 3 {
		t.Fatalf("Select().NumMessages = %d, want 3", sel.NumMessages)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{
		Envelope: true, Flags: true, RFC822Size: true, InternalDate: true, UID: true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection:   []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, Peek: true}, {Part: []int{1}, Peek: true}},
	}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 {
		t.Fatalf("Fetch returned %d messages, want 3", len(msgs))
	}
	for _, m := range msgs {
		if m.Envelope == nil || !strings.Contains(m.Envelope.Subject, "+4930123456") {
			t.Errorf("Envelope = %+v, want the caller in the subject", m.Envelope)
		}
		if m.RFC822Size <= 100_000 {
			t.Errorf("RFC822Size = %d, want > audio size", m.RFC822Size)
		}
		mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
		if !ok || len(mp.Children) != 2 {
			t.Fatalf("BodyStructure = %#v, want multipart with 2 parts", m.BodyStructure)
		}
		if a := mp.Children[1].(*imap.BodyStructureSinglePart); a.Type != "audio" {
			t.Errorf("part 2 type = %q, want audio", a.Type)
		}
		// Unheard, and \Recent: this is the first session to see them.
		if len(m.Flags) != 1 || m.Flags[0] != flagRecent {
			t.Errorf("Flags = %v, want only \\Recent", m.Flags)
		}
	}
	if n := e.store.read.Load(); n != 0 {
		t.Fatalf("audio bytes read = %d, want 0", n)
	}
	if n := e.store.opens.Load(); n != 0 {
		t.Fatalf("audio opens = %d, want 0", n)
	}

	// A full body fetch without PEEK streams the audio and marks it heard.
	full, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{
		RFC822Size:  true,
		BodySection: []*imap.FetchItemBodySection{{}},
	}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var body []byte
	for _, b := range full[0].BodySection {
		body = b.Bytes
	}
	if int64(len(body)) != full[0].RFC822Size {
		t.Fatalf("len(BODY[]) = %d, want RFC822.SIZE %d", len(body), full[0].RFC822Size)
	}
	if e.store.read.Load() == 0 {
		t.Fatal("BODY[] read no audio")
	}
	msgsNow := e.list("1001", um.Inbox)
	if !msgsNow[0].Heard() {
		t.Fatal("BODY[] did not mark the message heard")
	}
	e.svc.FlushMWI()
	if st, ok := e.mwi.last("1001"); !ok || st.New != 2 || st.Old != 1 {
		t.Fatalf("MWI = %+v, want 2 new 1 old", st)
	}
}

func TestStoreExpungeReachUm(t *testing.T) {
	e := newEnv(t, nil)
	m1 := e.deposit("1001", "+111", 10)
	e.deposit("1001", "+222", 10)
	c := e.dial("alice", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen, "$Label1"}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	got, err := e.mailbox("1001").Message(context.Background(), m1.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Heard() || len(got.Keywords) != 1 || got.Keywords[0] != "$Label1" {
		t.Fatalf("after STORE: flags %v keywords %v, want heard and $Label1", got.Flags, got.Keywords)
	}
	if err := c.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	exp, err := c.Expunge().Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(exp) != 1 || exp[0] != 1 {
		t.Fatalf("EXPUNGE = %v, want [1]", exp)
	}
	if msgs := e.list("1001", um.Inbox); len(msgs) != 1 || msgs[0].CallerNumber != "+222" {
		t.Fatalf("INBOX after expunge = %v, want only +222", msgs)
	}
	e.svc.FlushMWI()
	if st, _ := e.mwi.last("1001"); st.New != 1 || st.Old != 0 {
		t.Fatalf("MWI = %+v, want 1 new", st)
	}
	// MOVE to Trash.
	if _, err := c.Move(imap.SeqSetNum(1), "Trash").Wait(); err != nil {
		t.Fatal(err)
	}
	if n := len(e.list("1001", um.Inbox)); n != 0 {
		t.Fatalf("INBOX after MOVE holds %d, want 0", n)
	}
	if n := len(e.list("1001", um.Trash)); n != 1 {
		t.Fatalf("Trash after MOVE holds %d, want 1", n)
	}
	_ = io.EOF
}
