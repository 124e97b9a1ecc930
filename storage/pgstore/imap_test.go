package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/imapserver"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// serveIMAP starts the IMAP server of node n on a loopback port, with one
// user "u" (password "p") on mailbox, and returns its address.
func serveIMAP(t testing.TB, n *node, mailbox string) string {
	t.Helper()
	srv, err := imapserver.New(n.svc, &imapserver.Options{
		Authenticate: func(ctx context.Context, user, pass string) (string, error) {
			if user != "u" || pass != "p" {
				return "", errors.New("bad credentials")
			}
			return mailbox, nil
		},
		InsecureAuth:      true, // loopback only
		LoginFailureDelay: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// idleClient logs in to addr, selects INBOX and starts IDLE. Each EXISTS the
// server sends goes to the returned channel.
func idleClient(t testing.TB, addr string) (*imapclient.Client, *imapclient.IdleCommand, <-chan uint32, <-chan []imap.Flag) {
	t.Helper()
	exists := make(chan uint32, 1000)
	flags := make(chan []imap.Flag, 1000)
	c, err := imapclient.DialInsecure(addr, &imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				exists <- *d.NumMessages
			}
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			if buf, err := msg.Collect(); err == nil && buf.Flags != nil {
				flags <- buf.Flags
			}
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Login("u", "p").Wait(); err != nil {
		t.Fatalf("Login() = %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatalf("Select() = %v", err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatalf("Idle() = %v", err)
	}
	return c, idle, exists, flags
}

func waitExists(t testing.TB, exists <-chan uint32, want uint32) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case n := <-exists:
			if n == want {
				return
			}
		case <-timeout:
			t.Fatalf("no * %d EXISTS within 10s", want)
		}
	}
}

// TestClusterIdleClient: a deposit on node A appears to an IDLE IMAP client
// of node B, and so does the message heard on A.
func TestClusterIdleClient(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	a, b := startNode(t, dsn, "A"), startNode(t, dsn, "B")
	mbA := mailbox(t, a, "1001")
	mailbox(t, b, "1001")
	_, idle, exists, flags := idleClient(t, serveIMAP(t, b, "1001"))

	m, err := mbA.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav(100)), CallerNumber: "+4930123"})
	if err != nil {
		t.Fatal(err)
	}
	waitExists(t, exists, 1)
	if err := mbA.MarkHeard(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-flags:
		// \Recent too: the deposit arrived while this session had INBOX
		// selected, the only one on node B.
		if !slices.Equal(f, []imap.Flag{imap.FlagSeen, `\Recent`}) {
			t.Errorf("IDLE client of B got FLAGS %v, want (\\Seen \\Recent)", f)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("IDLE client of B got no FETCH FLAGS for the message heard on A")
	}
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Errorf("IDLE ended with %v", err)
	}
}
