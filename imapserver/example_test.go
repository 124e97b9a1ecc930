package imapserver_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/imapserver"
	"github.com/embeddedum/um/internal/selfsigned"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
)

// A PBX serves its voice mailboxes to mail clients. Here the server listens
// for implicit TLS on a loopback port (993 on a PBX), and a client logs in
// with the mailbox's PIN and reads the subject of the voicemail in INBOX.
func Example() {
	ctx := context.Background()
	svc, err := um.New(memstore.New(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	mb, err := svc.CreateMailbox(ctx, "1001")
	if err != nil {
		log.Fatal(err)
	}
	_, err = mb.Deposit(ctx, um.Deposit{
		Audio:        bytes.NewReader(wav.Silence(12 * time.Second)),
		CallerNumber: "+4930123456",
		CallerName:   "Alice",
		Duration:     12 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}

	// A self-signed certificate for 127.0.0.1; a PBX presents its own.
	cert, err := selfsigned.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	srv, err := imapserver.New(svc, &imapserver.Options{
		Authenticate: func(ctx context.Context, username, password string) (string, error) {
			// The PBX checks the voicemail PIN and names the mailbox
			// the session may use.
			if username == "1001" && password == "4711" {
				return "1001", nil
			}
			return "", errors.New("wrong PIN")
		},
		TLSConfig: cert.ServerConfig(),
	})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.ServeTLS(ln)
	defer srv.Close()

	c, err := imapclient.DialTLS(ln.Addr().String(), &imapclient.Options{
		TLSConfig: cert.ClientConfig("127.0.0.1"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("1001", "4711").Wait(); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		log.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Envelope: true}).Collect()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msgs[0].Envelope.Subject)
	if err := c.Logout().Wait(); err != nil {
		log.Fatal(err)
	}
	// Output: Voice message from Alice (+4930123456), 0:12
}

// A PBX that stops or restarts shuts the server down gracefully: each
// client's command in progress finishes, then the client is sent BYE and
// disconnected, and Serve and ServeTLS return ErrServerClosed.
func ExampleServer_Shutdown() {
	ctx := context.Background()
	svc, err := um.New(memstore.New(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	if _, err := svc.CreateMailbox(ctx, "1001"); err != nil {
		log.Fatal(err)
	}
	cert, err := selfsigned.New(nil)
	if err != nil {
		log.Fatal(err)
	}
	srv, err := imapserver.New(svc, &imapserver.Options{
		Authenticate: func(ctx context.Context, username, password string) (string, error) {
			if username == "1001" && password == "4711" {
				return "1001", nil
			}
			return "", errors.New("wrong PIN")
		},
		TLSConfig: cert.ServerConfig(),
	})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTLS(ln) }()

	c, err := imapclient.DialTLS(ln.Addr().String(), &imapclient.Options{
		TLSConfig: cert.ClientConfig("127.0.0.1"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("1001", "4711").Wait(); err != nil {
		log.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		log.Fatal(err)
	}

	// Give slow clients some time, then cut them off.
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	<-c.Closed()
	fmt.Println("client disconnected")
	fmt.Println(errors.Is(<-served, imapserver.ErrServerClosed))
	// Output:
	// client disconnected
	// true
}
