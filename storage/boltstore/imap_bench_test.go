package boltstore

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/imapserver"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// BenchmarkIMAPSelect10k is what a mail client does when it opens a voice
// mailbox of 10,000 messages: SELECT INBOX, then FETCH 1:* (UID FLAGS) to
// learn every message's UID and flags. The server is um's imapserver on
// this store over loopback TCP; "select" is the SELECT alone, "select+fetch"
// both, on one logged-in connection.
func BenchmarkIMAPSelect10k(b *testing.B) {
	const n = 10000
	s := openStore(b)
	svc, err := um.New(s, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { svc.Close() })
	if _, err := svc.CreateMailbox(ctx, "1001"); err != nil {
		b.Fatal(err)
	}
	seedMessages(b, s, "1001", um.Inbox, n)
	c := imapSession(b, svc, "1001")
	all := imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}
	for _, fetch := range []bool{false, true} {
		name := "select"
		if fetch {
			name = "select+fetch"
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				data, err := c.Select("INBOX", nil).Wait()
				if err != nil {
					b.Fatal(err)
				}
				if data.NumMessages != n {
					b.Fatalf("SELECT: %d messages, want %d", data.NumMessages, n)
				}
				if !fetch {
					continue
				}
				msgs, err := c.Fetch(all, &imap.FetchOptions{UID: true, Flags: true}).Collect()
				if err != nil {
					b.Fatal(err)
				}
				if len(msgs) != n || msgs[n-1].UID != imap.UID(n) {
					b.Fatalf("FETCH 1:* (UID FLAGS): %d messages, want %d with UIDs 1..%d", len(msgs), n, n)
				}
			}
		})
	}
}

// imapSession serves svc with imapserver on a loopback port and returns a
// client logged in to mailbox.
func imapSession(b testing.TB, svc *um.Service, mailbox string) *imapclient.Client {
	b.Helper()
	srv, err := imapserver.New(svc, &imapserver.Options{
		Authenticate: func(_ context.Context, user, pass string) (string, error) {
			if user != mailbox || pass != "pw" {
				return "", errors.New("bad credentials")
			}
			return mailbox, nil
		},
		InsecureAuth: true, // loopback only
	})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ln) }()
	b.Cleanup(func() {
		srv.Close()
		wg.Wait()
	})
	c, err := imapclient.DialInsecure(ln.Addr().String(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if err := c.Login(mailbox, "pw").Wait(); err != nil {
		b.Fatalf("LOGIN = %v", err)
	}
	return c
}
