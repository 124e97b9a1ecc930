package imapserver

import (
	"context"
	"sync"
	"testing"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// updates records what a client is told without asking.
type updates struct {
	mu       sync.Mutex
	exists   []uint32
	expunges []uint32
	flags    map[uint32][]imap.Flag
}

func newUpdates() (*updates, *imapclient.UnilateralDataHandler) {
	u := &updates{flags: make(map[uint32][]imap.Flag)}
	return u, &imapclient.UnilateralDataHandler{
		Expunge: func(seq uint32) { u.mu.Lock(); u.expunges = append(u.expunges, seq); u.mu.Unlock() },
		Mailbox: func(d *imapclient.UnilateralDataMailbox) {
			if d.NumMessages != nil {
				u.mu.Lock()
				u.exists = append(u.exists, *d.NumMessages)
				u.mu.Unlock()
			}
		},
		Fetch: func(msg *imapclient.FetchMessageData) {
			buf, err := msg.Collect()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.flags[buf.SeqNum] = buf.Flags
			u.mu.Unlock()
		},
	}
}

func (u *updates) lastExists() uint32 {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.exists) == 0 {
		return 0
	}
	return u.exists[len(u.exists)-1]
}

func (u *updates) expunged() []uint32 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]uint32(nil), u.expunges...)
}

func (u *updates) flagsOf(seq uint32) []imap.Flag {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.flags[seq]
}

func hasIMAPFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, g := range flags {
		if g == f {
			return true
		}
	}
	return false
}

func TestPhoneActionsReachIdleClient(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+111", 10)
	u, h := newUpdates()
	c := e.dial("alice", h)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	mb := e.mailbox("1001")
	m2 := e.deposit("1001", "+222", 10)
	waitFor(t, "EXISTS 2", func() bool { return u.lastExists() == 2 })

	if err := mb.MarkHeard(context.Background(), m2.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, `FETCH 2 (FLAGS (\Seen))`, func() bool { return hasIMAPFlag(u.flagsOf(2), imap.FlagSeen) })

	msgs := e.list("1001", um.Inbox)
	if err := mb.Delete(context.Background(), msgs[0].ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "EXPUNGE 1", func() bool { e := u.expunged(); return len(e) == 1 && e[0] == 1 })
	if err := idle.Close(); err != nil {
		t.Fatal(err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	// The client's view now: one message, heard.
	got, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{Flags: true, UID: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].UID != imap.UID(m2.UID) || !hasIMAPFlag(got[0].Flags, imap.FlagSeen) {
		t.Fatalf("FETCH 1 = %+v, want UID %d heard", got, m2.UID)
	}
}

func TestClientStoreReachesOtherClientAndMWI(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+111", 10)
	u, h := newUpdates()
	watcher := e.dial("alice", h)
	if _, err := watcher.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := watcher.Idle()
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	actor := e.dial("alice", nil)
	if _, err := actor.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := actor.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, `FETCH 1 (FLAGS (\Seen)) at the other client`, func() bool { return hasIMAPFlag(u.flagsOf(1), imap.FlagSeen) })
	e.svc.FlushMWI()
	if st, ok := e.mwi.last("1001"); !ok || st.New != 0 || st.Old != 1 {
		t.Fatalf("MWI = %+v, want 0 new 1 old", st)
	}
	// The client's MOVE to Trash reaches the watcher as EXPUNGE and the lamp.
	if _, err := actor.Move(imap.SeqSetNum(1), "Trash").Wait(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "EXPUNGE 1 at the other client", func() bool { return len(u.expunged()) == 1 })
	e.svc.FlushMWI()
	if st, _ := e.mwi.last("1001"); st.Old != 0 || st.New != 0 {
		t.Fatalf("MWI after MOVE = %+v, want empty", st)
	}
}
