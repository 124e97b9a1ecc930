package imapserver

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
)

func TestFolderLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial("alice", nil)
	if err := c.Create("Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Create("Work", nil).Wait(); codeOf(err) != imap.ResponseCodeAlreadyExists {
		t.Fatalf("CREATE Work again = %v, want ALREADYEXISTS", err)
	}
	if err := c.Create("INBOX", nil).Wait(); codeOf(err) != imap.ResponseCodeAlreadyExists {
		t.Fatalf("CREATE INBOX = %v, want ALREADYEXISTS", err)
	}
	list, err := c.List("", "*", &imap.ListOptions{ReturnSpecialUse: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]imap.MailboxAttr{}
	for _, l := range list {
		got[l.Mailbox] = l.Attrs
	}
	if len(got) != 3 {
		t.Fatalf("LIST * = %v, want INBOX, Trash, Work", got)
	}
	trash := false
	for _, a := range got["Trash"] {
		trash = trash || a == imap.MailboxAttrTrash
	}
	if !trash {
		t.Fatalf("Trash attrs = %v, want \\Trash", got["Trash"])
	}

	// APPEND into the folder works; into INBOX is refused.
	msg := "From: a@example.com\r\nSubject: note\r\n\r\nhello\r\n"
	ap := c.Append("Work", int64(len(msg)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}})
	ap.Write([]byte(msg))
	ap.Close()
	data, err := ap.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if data.UID == 0 || data.UIDValidity == 0 {
		t.Fatalf("APPEND data = %+v, want APPENDUID", data)
	}
	ap = c.Append("INBOX", int64(len(msg)), nil)
	ap.Write([]byte(msg))
	ap.Close()
	if _, err := ap.Wait(); codeOf(err) != imap.ResponseCodeCannot {
		t.Fatalf("APPEND INBOX = %v, want CANNOT", err)
	}
	ap = c.Append("Nowhere", int64(len(msg)), nil)
	ap.Write([]byte(msg))
	ap.Close()
	if _, err := ap.Wait(); codeOf(err) != imap.ResponseCodeTryCreate {
		t.Fatalf("APPEND Nowhere = %v, want TRYCREATE", err)
	}

	st, err := c.Status("Work", &imap.StatusOptions{NumMessages: true, NumUnseen: true, UIDNext: true, UIDValidity: true, Size: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if *st.NumMessages != 1 || *st.NumUnseen != 0 || *st.Size != int64(len(msg)) {
		t.Fatalf("STATUS Work = %d msgs %d unseen size %d, want 1, 0, %d", *st.NumMessages, *st.NumUnseen, *st.Size, len(msg))
	}

	// The appended message reads back as stored.
	if _, err := c.Select("Work", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	// An APPEND into the selected folder shows as EXISTS to the session.
	ap = c.Append("Work", int64(len(msg)), nil)
	ap.Write([]byte(msg))
	ap.Close()
	if _, err := ap.Wait(); err != nil {
		t.Fatal(err)
	}
	if n := c.Mailbox().NumMessages; n != 2 {
		t.Fatalf("after APPEND into the selected folder the client counts %d, want 2", n)
	}
	st, err = c.Status("Work", &imap.StatusOptions{NumMessages: true}).Wait()
	if err != nil || *st.NumMessages != 2 {
		t.Fatalf("STATUS Work = %v, %v; want 2 messages", st, err)
	}
	bufs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Envelope: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(bufs) != 1 || bufs[0].Envelope.Subject != "note" || string(bufs[0].BodySection[0].Bytes) != msg {
		t.Fatalf("FETCH of appended message = %+v", bufs)
	}
	// COPY to a missing folder asks to create it; MOVE of e-mail into
	// INBOX is refused.
	if _, err := c.Copy(imap.SeqSetNum(1), "Nowhere").Wait(); codeOf(err) != imap.ResponseCodeTryCreate {
		t.Fatalf("COPY to Nowhere = %v, want TRYCREATE", err)
	}
	if _, err := c.Move(imap.SeqSetNum(1), "INBOX").Wait(); codeOf(err) != imap.ResponseCodeCannot {
		t.Fatalf("MOVE e-mail to INBOX = %v, want CANNOT", err)
	}
	if err := c.Unselect().Wait(); err != nil {
		t.Fatal(err)
	}

	if err := c.Rename("Work", "Archive", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename("INBOX", "Old", nil).Wait(); codeOf(err) != imap.ResponseCodeCannot {
		t.Fatalf("RENAME INBOX = %v, want CANNOT", err)
	}
	if err := c.Rename("Trash", "Bin", nil).Wait(); codeOf(err) != imap.ResponseCodeCannot {
		t.Fatalf("RENAME Trash = %v, want CANNOT", err)
	}
	if err := c.Delete("Trash").Wait(); codeOf(err) != imap.ResponseCodeCannot {
		t.Fatalf("DELETE Trash = %v, want CANNOT", err)
	}
	if err := c.Delete("Work").Wait(); codeOf(err) != imap.ResponseCodeNonExistent {
		t.Fatalf("DELETE Work after rename = %v, want NONEXISTENT", err)
	}
	if _, err := c.Select("Work", nil).Wait(); codeOf(err) != imap.ResponseCodeNonExistent {
		t.Fatalf("SELECT Work = %v, want NONEXISTENT", err)
	}
	if err := c.Delete("Archive").Wait(); err != nil {
		t.Fatal(err)
	}
	fs, err := e.mailbox("1001").Folders(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 2 {
		t.Fatalf("folders after DELETE = %v, want INBOX and Trash", fs)
	}

	// NAMESPACE and LSUB answer.
	ns, err := c.Namespace().Wait()
	if err != nil || len(ns.Personal) != 1 {
		t.Fatalf("NAMESPACE = %+v, %v", ns, err)
	}
}

// opaqueStore hides the optional interfaces of the store it wraps: a
// host's store that keeps no subscriptions.
type opaqueStore struct{ um.Store }

// TestSubscriptionsKept: with a store that keeps subscriptions, INBOX and
// Trash are subscribed from the start, SUBSCRIBE of an existing folder
// adds one, UNSUBSCRIBE removes one (and of a name not subscribed is no
// error), and LSUB and LIST (SUBSCRIBED) show exactly those.
func TestSubscriptionsKept(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.mailbox("1001").CreateFolder(context.Background(), "Work"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.mailbox("1001").CreateFolder(context.Background(), "Old"); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	for _, cmd := range []string{"UNSUBSCRIBE Trash", "UNSUBSCRIBE Nothing", "SUBSCRIBE Work"} {
		if got := r.cmd("b", cmd); !strings.HasPrefix(got, "b OK") {
			t.Fatalf("%s = %q, want OK", cmd, got)
		}
	}
	if got := r.cmd("c", "SUBSCRIBE Nothing"); !strings.HasPrefix(got, "c NO [NONEXISTENT]") {
		t.Fatalf("SUBSCRIBE of a missing folder = %q, want NO [NONEXISTENT]", got)
	}
	for _, cmd := range []string{`LSUB "" "*"`, `LIST (SUBSCRIBED) "" "*"`} {
		got := strings.Join(r.until0("d "+cmd, "d"), "|")
		for f, want := range map[string]bool{"INBOX": true, "Work": true, "Trash": false, "Old": false} {
			if listed := strings.Contains(got, `"/" `+f) || strings.Contains(got, `"/" "`+f+`"`); listed != want {
				t.Errorf("%s = %q: %s listed %v, want %v", cmd, got, f, listed, want)
			}
		}
	}
	got := strings.Join(r.until0(`d LIST "" "*" RETURN (SUBSCRIBED)`, "d"), "|")
	if n := strings.Count(got, `\Subscribed`); n != 2 {
		t.Errorf(`LIST "" "*" RETURN (SUBSCRIBED) = %q, want two \Subscribed`, got)
	}
}

// TestEveryFolderSubscribedWithoutStoreSupport: a store that keeps no
// subscriptions (no um.FolderSubscriber) has every folder listed as
// subscribed, and SUBSCRIBE and UNSUBSCRIBE change nothing.
func TestEveryFolderSubscribedWithoutStoreSupport(t *testing.T) {
	e := newEnvOn(t, func(s um.Store) um.Store { return opaqueStore{s} }, um.Options{}, nil)
	if _, err := e.mailbox("1001").CreateFolder(context.Background(), "Work"); err != nil {
		t.Fatal(err)
	}
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	for _, cmd := range []string{"UNSUBSCRIBE Trash", "UNSUBSCRIBE Nothing", "SUBSCRIBE Work"} {
		if got := r.cmd("b", cmd); !strings.HasPrefix(got, "b OK") {
			t.Fatalf("%s = %q, want OK", cmd, got)
		}
	}
	for _, cmd := range []string{`LSUB "" "*"`, `LIST (SUBSCRIBED) "" "*"`, `LIST "" "*" RETURN (SUBSCRIBED)`} {
		got := strings.Join(r.until0("d "+cmd, "d"), "|")
		for _, f := range []string{"INBOX", "Trash", "Work"} {
			if !strings.Contains(got, `"/" `+f) && !strings.Contains(got, `"/" "`+f+`"`) {
				t.Errorf("%s = %q, want %s listed", cmd, got, f)
			}
		}
		if strings.HasPrefix(cmd, "LIST") && strings.Count(got, `\Subscribed`) != 3 {
			t.Errorf("%s = %q, want three \\Subscribed", cmd, got)
		}
	}
}

// TestListAnyPattern sends LIST and other commands with names that are
// not valid modified UTF-7, and odd patterns: none may get SERVERBUG.
func TestListAnyPattern(t *testing.T) {
	e := newEnv(t, nil)
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	cmds := []string{
		`LIST "" "&"`, `LIST "" "&Jjo"`, `LIST "" "&-&"`, `LIST "&" "*"`, `LIST "" ""`,
		`LIST "" "%"`, `LIST "" "*/*"`, `LIST "" "INBOX/%"`, `LIST "" "inbox"`, `LSUB "" "&"`,
		`LIST (SUBSCRIBED) "" "*" RETURN (STATUS (MESSAGES UNSEEN SIZE))`,
		`SELECT "&"`, `CREATE "&Jjo-&Jjo-"`, `STATUS "&" (MESSAGES)`, `CREATE "&AKM-"`, `DELETE "&AKM-"`,
		`LIST "" "` + strings.Repeat("*%", 300) + `"`,
	}
	for i, c := range cmds {
		tag := fmt.Sprintf("t%d", i)
		r.send(tag + " " + c + "\r\n")
		lines := r.until(tag)
		last := lines[len(lines)-1]
		if strings.Contains(last, "SERVERBUG") || !(strings.HasPrefix(last, tag+" OK") || strings.HasPrefix(last, tag+" NO") || strings.HasPrefix(last, tag+" BAD")) {
			t.Errorf("%s = %q, want an answer without SERVERBUG", c, last)
		}
	}
}

// TestIsolation has alice try bob's mailbox by every command that takes a
// name: she reaches only her own folders.
func TestIsolation(t *testing.T) {
	e := newEnv(t, nil)
	bobMsg := e.deposit("1002", "+999", 10)
	if _, err := e.mailbox("1002").CreateFolder(context.Background(), "Private"); err != nil {
		t.Fatal(err)
	}
	e.deposit("1001", "+111", 10)
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	names := []string{"Private", "1002", "1002/INBOX", "../1002/INBOX", "#shared/1002", "~bob/INBOX", "/1002/Private", "bob", "user/bob"}
	for _, n := range names {
		for _, cmd := range []string{
			`SELECT "%s"`, `EXAMINE "%s"`, `STATUS "%s" (MESSAGES)`, `DELETE "%s"`,
			`RENAME "%s" "Mine"`, `SUBSCRIBE "%s"`, `APPEND "%s" {2+}` + "\r\nhi",
		} {
			got := r.cmd("x", fmt.Sprintf(cmd, n))
			if strings.HasPrefix(got, "x OK") {
				t.Errorf("%s = %q, want refusal", fmt.Sprintf(cmd, n), got)
			}
		}
	}
	lines := r.until0(`y LIST "" "*"`, "y")
	for _, l := range lines {
		if strings.Contains(l, "Private") || strings.Contains(l, "1002") {
			t.Errorf("LIST shows %q", l)
		}
	}
	lines = r.until0(fmt.Sprintf(`z UID FETCH 1:* (ENVELOPE) `), "z")
	_ = lines
	r.cmd("s", "SELECT INBOX")
	lines = r.until0(fmt.Sprintf("f UID FETCH %d:* (ENVELOPE BODY.PEEK[])", bobMsg.UID), "f")
	for _, l := range lines {
		if strings.Contains(l, "+999") {
			t.Errorf("alice read bob's message: %q", l)
		}
	}
	for _, cmd := range []string{`COPY 1 "Private"`, `MOVE 1 "1002/INBOX"`, `COPY 1 "../1002/INBOX"`} {
		if got := r.cmd("c", cmd); !strings.Contains(got, "TRYCREATE") {
			t.Errorf("%s = %q, want NO [TRYCREATE]", cmd, got)
		}
	}
	// Bob's mailbox is as it was.
	if msgs := e.list("1002", um.Inbox); len(msgs) != 1 || msgs[0].ID != bobMsg.ID || msgs[0].Heard() {
		t.Fatalf("bob's INBOX = %+v, want his one unheard message", msgs)
	}
	if msgs := e.list("1002", "Private"); len(msgs) != 0 {
		t.Fatalf("bob's Private holds %d, want 0", len(msgs))
	}
	if msgs := e.list("1001", um.Inbox); len(msgs) != 1 {
		t.Fatalf("alice's INBOX holds %d, want 1", len(msgs))
	}
}
