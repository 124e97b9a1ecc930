package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2/imapclient"
)

// TestCertificateExceptionOnStartTLSPort does what Thunderbird's "Add
// Security Exception" dialog does to show a server's certificate: it opens
// a TLS connection straight to the configured port, the STARTTLS port too,
// without a STARTTLS command first. The dialog's "Confirm Security
// Exception" stays greyed out unless that handshake brings the server's
// certificate, so the demo's STARTTLS port must serve a TLS ClientHello as
// implicit TLS; the session that follows is a normal IMAP session.
func TestCertificateExceptionOnStartTLSPort(t *testing.T) {
	d := startDemo(t)
	pemBytes, err := os.ReadFile(d.certFile())
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemBytes)
	raw, err := net.DialTimeout("tcp", d.imap, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(waitFor))
	// The dialog trusts nothing yet: it fetches the certificate to show it.
	c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: "127.0.0.1"})
	if err := c.Handshake(); err != nil {
		t.Fatalf("TLS handshake on the STARTTLS port %s: %v; want the server's certificate (stderr of the demo:\n%s)", d.imap, err, d.stderr)
	}
	peer := c.ConnectionState().PeerCertificates
	if len(peer) == 0 || blk == nil || !bytes.Equal(peer[0].Raw, blk.Bytes) {
		t.Fatalf("the STARTTLS port presented another certificate than %s", d.certFile())
	}
	r := bufio.NewReader(c)
	greeting, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(greeting, "* OK") {
		t.Fatalf("greeting over TLS on the STARTTLS port = %q, %v; want * OK", greeting, err)
	}
	if _, err := c.Write([]byte("a1 LOGIN " + testUser + " " + demoPass + "\r\n")); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("LOGIN over TLS on the STARTTLS port: %v", err)
		}
		if strings.HasPrefix(line, "a1 ") {
			if !strings.HasPrefix(line, "a1 OK") {
				t.Errorf("LOGIN over TLS on the STARTTLS port = %q, want a1 OK", line)
			}
			break
		}
	}
}

// TestVoicemailBackIntoInboxByAppend does over IMAP what Thunderbird's move
// of a voicemail back from another account does: an APPEND of the rendered
// voicemail into INBOX. The voicemail itself comes back from Trash,
// unheard as it was; an ordinary e-mail appended to INBOX is refused with
// words a user understands.
func TestVoicemailBackIntoInboxByAppend(t *testing.T) {
	e := startEnv(t, 2)
	ctx := context.Background()
	c := dialIMAP(t, e)
	raw := e.rendered(t, e.msgs[0])
	if err := e.mb.Delete(ctx, e.msgs[0].ID); err != nil {
		t.Fatal(err)
	}
	appendMail(t, c, "INBOX", raw)
	m, err := e.mb.Message(ctx, e.msgs[0].ID)
	if err != nil || m.Folder != um.Inbox || m.Heard() {
		t.Errorf("the voicemail after APPEND of its copy to INBOX: folder %q heard %v, %v; want INBOX, unheard", m.Folder, m.Heard(), err)
	}
	if inbox, _ := e.mb.List(ctx, um.Inbox); len(inbox) != 2 {
		t.Errorf("INBOX holds %d messages, want the 2 voicemails once each", len(inbox))
	}
	if err := appendToInbox(c, []byte("Subject: lunch?\r\n\r\nat noon\r\n")); err == nil || !strings.Contains(err.Error(), "NO [CANNOT]") {
		t.Errorf("APPEND of an e-mail to INBOX = %v, want NO [CANNOT]", err)
	}
	if inbox, _ := e.mb.List(ctx, um.Inbox); len(inbox) != 2 {
		t.Errorf("INBOX holds %d messages after the refused APPEND, want 2", len(inbox))
	}
}

// appendToInbox appends mail to INBOX and returns the server's answer.
func appendToInbox(c *imapclient.Client, mail []byte) error {
	cmd := c.Append("INBOX", int64(len(mail)), nil)
	cmd.Write(mail)
	cmd.Close()
	_, err := cmd.Wait()
	return err
}
