package um_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/imapserver"
	"github.com/embeddedum/um/internal/selfsigned"
	"github.com/embeddedum/um/storage/boltstore"
	"github.com/embeddedum/um/wav"
)

// runPBX is the README's quick start, character for character
// (TestREADMEQuickStart compares them). notify and checkPIN are the
// host's: its SIP stack and its PIN check.
func runPBX(ctx context.Context, dir string, tlsConf *tls.Config, plain, secure net.Listener, recording io.Reader) (err error) {
	store, err := boltstore.Open(dir, nil)
	if err != nil {
		return err
	}
	defer func() { // last: the store outlives everything that uses it
		if cerr := store.Close(); err == nil {
			err = cerr
		}
	}()
	svc, err := um.New(store, &um.Options{
		MWI: func(s um.MWIState) { // after commit, never under a lock
			notify(s.Mailbox, "application/simple-message-summary", s.MessageSummary("sip:"+s.Mailbox+"@pbx.example.com"))
		},
		MaxMessages: 100, MaxRecordedTime: 30 * time.Minute, TrashRetention: 30 * 24 * time.Hour,
	})
	if err != nil {
		return err
	}
	defer svc.Close() // after the IMAP server: gives the MWI hook the last states
	mb, err := svc.EnsureMailbox(ctx, "1001")
	if err != nil {
		return err
	}

	// Call control, when the caller hangs up. A WAV's length is read from it.
	msg, err := mb.Deposit(ctx, um.Deposit{Audio: recording, CallerNumber: "+4930123456", CallerName: "Alice"})
	if err != nil {
		return err
	}
	fmt.Printf("voicemail %d for %s, %v\n", msg.UID, mb.Name(), msg.Duration)

	// The same mailbox in every mail client.
	srv, err := imapserver.New(svc, &imapserver.Options{Authenticate: checkPIN, TLSConfig: tlsConf})
	if err != nil {
		return err
	}
	served := make(chan error, 2)
	go func() { served <- srv.ServeTLS(secure) }() // implicit TLS, port 993
	go func() { served <- srv.Serve(plain) }()     // STARTTLS, port 143
	var serveErr error
	select {
	case <-ctx.Done(): // the PBX is shutting down
	case serveErr = <-served: // a listener failed
	}

	// Shut down in the reverse order of start: the IMAP server first (it
	// ends every session with BYE), then the Service, then the store.
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	return serveErr
}

// lamps stands in for the host's SIP stack in the example.
var lamps = make(chan string, 10)

func notify(mailbox, contentType string, body []byte) {
	lamps <- mailbox + " " + contentType + ": " + strings.ReplaceAll(strings.TrimSpace(string(body)), "\r\n", "; ")
}

func checkPIN(ctx context.Context, username, password string) (string, error) {
	if username == "1001" && password == "4711" {
		return "1001", nil
	}
	return "", errors.New("wrong PIN")
}

// The README's quick start: a store, the Service with a lamp hook and
// limits, a deposit, the IMAP server, and the shutdown in order.
func Example_quickStart() {
	dir, err := os.MkdirTemp("", "voicemail")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	cert, err := selfsigned.New(nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	secure, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- runPBX(ctx, dir, &tls.Config{Certificates: []tls.Certificate{cert.TLS}}, plain, secure, bytes.NewReader(wav.Tone(5*time.Second)))
	}()

	// A mail client connects.
	conn, err := net.DialTimeout("tcp", plain.Addr().String(), 5*time.Second)
	if err != nil {
		fmt.Println(err)
		return
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	greeting, err := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	fmt.Println("IMAP greeting starts with * OK:", strings.HasPrefix(greeting, "* OK"), err)
	fmt.Println("lamp:", <-lamps)

	stop()
	fmt.Println("stopped:", <-done)
	// Output:
	// voicemail 1 for 1001, 5s
	// IMAP greeting starts with * OK: true <nil>
	// lamp: 1001 application/simple-message-summary: Messages-Waiting: yes; Message-Account: sip:1001@pbx.example.com; Voice-Message: 1/0 (0/0)
	// stopped: <nil>
}

// TestREADMEQuickStart: the README's quick start is runPBX, so it
// compiles, checks every error and runs (Example_quickStart).
func TestREADMEQuickStart(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("example_quickstart_test.go")
	if err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(src, []byte("func runPBX("))
	end := bytes.Index(src[start:], []byte("\n}\n"))
	if start < 0 || end < 0 {
		t.Fatal("runPBX not found in example_quickstart_test.go")
	}
	fn := string(src[start : start+end+2])
	if !strings.Contains(string(readme), "```go\n"+fn+"\n```") {
		t.Errorf("README.md does not hold runPBX as a go block; it should read:\n%s", fn)
	}
}
