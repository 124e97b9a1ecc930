package cyrus_test

import (
	"slices"
	"testing"

	"github.com/embeddedum/um/internal/cyrus"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
)

func login(t *testing.T, s *cyrus.Server) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialTLS(s.TLSAddr, &imapclient.Options{TLSConfig: s.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Authenticate(sasl.NewPlainClient("", "1001", "any")); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestStartKillRestart: a user logs in over TLS and finds INBOX and a Trash
// marked \Trash; mail appended survives a SIGKILL and a restart.
func TestStartKillRestart(t *testing.T) {
	s, err := cyrus.Start(cyrus.Options{Dir: t.TempDir(), Users: []string{"1001"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	c := login(t, s)
	list, err := c.List("", "*", &imap.ListOptions{ReturnSpecialUse: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	var trash string
	for _, l := range list {
		if slices.Contains(l.Attrs, imap.MailboxAttrTrash) {
			trash = l.Mailbox
		}
	}
	if trash != "Trash" {
		t.Fatalf("folder marked \\Trash = %q, want Trash (LIST: %+v)", trash, list)
	}
	msg := "Subject: hi\r\n\r\nhello\r\n"
	cmd := c.Append("INBOX", int64(len(msg)), nil)
	cmd.Write([]byte(msg))
	cmd.Close()
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	sel, err := login(t, s).Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 1 {
		t.Fatalf("INBOX after restart = %+v, %v; want 1 message", sel, err)
	}
}
