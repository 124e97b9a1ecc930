package interop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// dialIMAP logs in to the env's server over implicit TLS.
func dialIMAP(t *testing.T, e *env) *imapclient.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(e.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	c, err := imapclient.DialTLS(e.TLSAddr, &imapclient.Options{TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login(testUser, testPass).Wait(); err != nil {
		t.Fatal(err)
	}
	return c
}

func appendMail(t *testing.T, c *imapclient.Client, folder string, mail []byte) {
	t.Helper()
	cmd := c.Append(folder, int64(len(mail)), nil)
	if _, err := cmd.Write(mail); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatalf("APPEND to %s: %v", folder, err)
	}
}

// TestVoicemailBackIntoInboxOverIMAP checks, over IMAP, what a client that
// keeps its own copy of a voicemail does: it files the copy in a folder
// (an APPEND, as from another account) and later moves that copy to INBOX.
// The voicemail itself comes back, unheard as it was; an ordinary e-mail
// moved the same way is refused and stays where it was.
func TestVoicemailBackIntoInboxOverIMAP(t *testing.T) {
	e := startEnv(t, 2)
	ctx := context.Background()
	c := dialIMAP(t, e)
	if err := c.Create("Saved", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	appendMail(t, c, "Saved", e.rendered(t, e.msgs[0]))
	appendMail(t, c, "Saved", []byte("Subject: lunch?\r\nFrom: a@example.com\r\n\r\nat noon\r\n"))
	if err := e.mb.Delete(ctx, e.msgs[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("Saved", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	if _, err := c.Move(imap.UIDSetNum(2), "INBOX").Wait(); err == nil {
		t.Errorf("UID MOVE of an ordinary e-mail to INBOX succeeded, want NO")
	}
	if _, err := c.Move(imap.UIDSetNum(1), "INBOX").Wait(); err != nil {
		t.Fatalf("UID MOVE of the voicemail's copy to INBOX: %v", err)
	}
	m, err := e.mb.Message(ctx, e.msgs[0].ID)
	if err != nil || m.Folder != um.Inbox || m.Heard() {
		t.Errorf("the voicemail after its copy moved to INBOX: folder %q heard %v, %v; want INBOX, unheard", m.Folder, m.Heard(), err)
	}
	saved, _ := e.mb.List(ctx, "Saved")
	if len(saved) != 1 || !saved[0].Raw {
		t.Errorf("Saved holds %d messages, want the ordinary e-mail alone", len(saved))
	}
	e.waitMWI(t, func(s um.MWIState) bool { return s.New == 2 && s.UrgentNew == 1 })
}

// TestDeleteTimeSeenOverIMAP does over IMAP what Thunderbird's Delete does
// (STORE +FLAGS \Seen, then MOVE to Trash): the phone's undelete brings the
// voicemail back unheard.
func TestDeleteTimeSeenOverIMAP(t *testing.T) {
	e := startEnv(t, 2)
	ctx := context.Background()
	c := dialIMAP(t, e)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	seen := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}
	if err := c.Store(imap.UIDSetNum(1, 2), seen, nil).Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Move(imap.UIDSetNum(1, 2), "Trash").Wait(); err != nil {
		t.Fatal(err)
	}
	for _, m := range e.msgs {
		back, err := e.mb.Undelete(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if back.Heard() {
			t.Errorf("voicemail %d came back heard; the client's \\Seen before its delete does not count", m.UID)
		}
	}
	e.waitMWI(t, func(s um.MWIState) bool { return s.New == 2 && s.Old == 0 })
}
