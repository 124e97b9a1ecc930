// The check below needs a server that answers a TLS ClientHello on its
// STARTTLS port as implicit TLS, which the IMAP engine rewrite brings. Until
// that engine is on the branch, this file builds only with
// "go test -tags certexception ./interop/", outside scripts/test.sh.

//go:build certexception

package interop

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"net"
	"os"
	"strings"
	"testing"
	"time"
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
