package imapserver

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// TestSoak runs deposits, phone actions, a client that flags and expunges,
// and several IDLE clients at once for two seconds (run it with -race). At
// the end every client's view must equal the store.
func TestSoak(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	mb := e.mailbox("1001")

	const idlers = 4
	clients := make([]*imapclient.Client, idlers)
	idles := make([]*imapclient.IdleCommand, idlers)
	for i := range clients {
		clients[i] = e.dial("alice", nil)
		if _, err := clients[i].Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		idle, err := clients[i].Idle()
		if err != nil {
			t.Fatal(err)
		}
		idles[i] = idle
	}
	worker := e.dial("alice", nil)
	if _, err := worker.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 16)
	run := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := f(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	n := 0
	run(func() error { // the phone deposits
		n++
		_, err := mb.Deposit(ctx, um.Deposit{Audio: bytesReader(silence(64)), CallerNumber: fmt.Sprint(n), Duration: time.Second})
		if ctx.Err() != nil {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
		return err
	})
	run(func() error { // the phone plays and deletes
		msgs, err := mb.List(ctx, um.Inbox)
		if err != nil || len(msgs) < 3 {
			time.Sleep(5 * time.Millisecond)
			return nil
		}
		mb.MarkHeard(ctx, msgs[0].ID)
		mb.Delete(ctx, msgs[1].ID)
		time.Sleep(5 * time.Millisecond)
		return nil
	})
	run(func() error { // a client flags and expunges
		if err := worker.Store(imap.SeqSet{imap.SeqRange{Start: 2, Stop: 3}}, &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted}}, nil).Close(); err != nil {
			return fmt.Errorf("STORE: %w", err)
		}
		if _, err := worker.Expunge().Collect(); err != nil {
			return fmt.Errorf("EXPUNGE: %w", err)
		}
		if _, err := worker.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{Flags: true, UID: true}).Collect(); err != nil {
			return fmt.Errorf("FETCH: %w", err)
		}
		time.Sleep(3 * time.Millisecond)
		return nil
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	want := e.list("1001", um.Inbox)
	check := func(name string, c *imapclient.Client) {
		if err := c.Noop().Wait(); err != nil {
			t.Fatalf("%s NOOP: %v", name, err)
		}
		got, err := c.Fetch(imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true}).Collect()
		if len(want) == 0 {
			err = nil
		}
		if err != nil {
			t.Fatalf("%s FETCH: %v", name, err)
		}
		if int(c.Mailbox().NumMessages) != len(want) || len(got) != len(want) {
			t.Fatalf("%s sees %d messages (EXISTS/EXPUNGE count %d), store has %d", name, len(got), c.Mailbox().NumMessages, len(want))
		}
		for i := range got {
			if got[i].SeqNum != uint32(i+1) || got[i].UID != imap.UID(want[i].UID) {
				t.Fatalf("%s: seq %d is UID %d, store has UID %d", name, got[i].SeqNum, got[i].UID, want[i].UID)
			}
		}
	}
	for i, idle := range idles {
		if err := idle.Close(); err != nil {
			t.Fatal(err)
		}
		if err := idle.Wait(); err != nil {
			t.Fatal(err)
		}
		check(fmt.Sprintf("idler %d", i), clients[i])
	}
	check("worker", worker)
	if len(want) == 0 && n < 10 {
		t.Fatalf("only %d deposits ran", n)
	}
}
