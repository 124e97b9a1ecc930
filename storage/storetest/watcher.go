package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// watchNode is the node the suite's Watch calls run as; Suite.Peer must
// return a Store that publishes under another node name.
const watchNode = "storetest-watcher"

// watchWait bounds every wait for a delivered change.
const watchWait = 10 * time.Second

// watching runs s.Watch until the test ends and returns the changes it
// delivers, after the first one: the resync every Watch delivers once it
// listens, which the suite checks and waits for, so that what it changes
// next is heard.
func watching(t *testing.T, s um.Store) <-chan um.Change {
	t.Helper()
	w := s.(um.Watcher)
	got := make(chan um.Change, 1000)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Watch(wctx, watchNode, func(c um.Change) { got <- c }) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch() after its context was canceled = %v, want context.Canceled", err)
			}
		case <-time.After(watchWait):
			t.Errorf("Watch() did not return within %v of its context's end", watchWait)
		}
	})
	c := nextChange(t, got, "the resync Watch delivers once it listens")
	if c.Mailbox != "" || len(c.Events) != 1 || c.Events[0].Kind != um.EventResync {
		t.Fatalf("Watch() first delivered %+v, want one EventResync of every mailbox (empty Mailbox)", c)
	}
	return got
}

func nextChange(t *testing.T, ch <-chan um.Change, what string) um.Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(watchWait):
		t.Fatalf("no change delivered within %v: waited for %s", watchWait, what)
		return um.Change{}
	}
}

// publish does what um does after a commit on a store that implements
// Publisher, so the suite checks stores of either kind.
func publish(t *testing.T, s um.Store, kind um.EventKind, m um.Message) {
	t.Helper()
	if p, ok := s.(um.Publisher); ok {
		c := um.Change{Mailbox: box, Node: "storetest-peer", Events: []um.Event{{Kind: kind, Folder: m.Folder, Message: m}}}
		if err := p.Publish(ctx, c); err != nil {
			t.Fatalf("Publish() = %v", err)
		}
	}
}

// testWatcher checks the optional um.Watcher against a peer Store value
// on the same data: the peer's changes arrive in commit order, the
// watching Store's own do not, and a lost feed is reported as a resync.
func (su Suite) testWatcher(t *testing.T, s um.Store) {
	if _, ok := s.(um.Watcher); !ok {
		notImplemented(t, "um.Watcher")
	}
	if su.Peer == nil {
		t.Fatal("the store implements um.Watcher but Suite.Peer is not set: Watch can only be checked with a second Store value on the same data")
	}
	mustMailbox(t, s, box)
	peer := su.Peer(t, s)
	got := watching(t, s)

	var sent []um.Message
	for i := range 5 {
		m, err := peer.Append(ctx, box, voice(um.Inbox, i), bytes.NewReader(content(10)))
		if err != nil {
			t.Fatal(err)
		}
		publish(t, peer, um.EventAdded, m)
		sent = append(sent, m)
	}
	own := mustAppend(t, s, voice(um.Inbox, 9), content(10)) // not to be delivered
	changed, err := peer.SetFlags(ctx, box, []uuid.UUID{sent[0].ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard})
	if err != nil || len(changed) != 1 {
		t.Fatalf("SetFlags() = %v, %v", changed, err)
	}
	publish(t, peer, um.EventFlags, changed[0])

	var events []um.Event
	for len(events) < len(sent)+1 {
		c := nextChange(t, got, fmt.Sprintf("event %d of the peer's %d", len(events)+1, len(sent)+1))
		if c.Mailbox != box {
			t.Fatalf("Watch() delivered a change of mailbox %q, want %q", c.Mailbox, box)
		}
		events = append(events, c.Events...)
	}
	for i, e := range events[:len(sent)] {
		if e.Kind != um.EventAdded || e.Message.ID != sent[i].ID || e.Message.UID != sent[i].UID {
			t.Errorf("event %d = %v of %s UID %d; want EventAdded of %s UID %d: commit order", i+1, e.Kind, e.Message.ID, e.Message.UID, sent[i].ID, sent[i].UID)
		}
		if _, ok := s.(um.ModSeqer); ok && e.Message.ModSeq != sent[i].ModSeq {
			t.Errorf("event %d carries ModSeq %d, want %d as stored: another node's IMAP sessions need it for CONDSTORE", i+1, e.Message.ModSeq, sent[i].ModSeq)
		}
		if e.Message.ID == own.ID {
			t.Errorf("Watch() delivered the watching Store's own Append")
		}
	}
	if e := events[len(sent)]; e.Kind != um.EventFlags || e.Message.ID != sent[0].ID || !e.Message.Flags.Has(um.FlagHeard) || e.Message.ModSeq != changed[0].ModSeq {
		t.Errorf("last event = %v of %s flags %v ModSeq %d; want EventFlags of %s with \\Seen and ModSeq %d", e.Kind, e.Message.ID, e.Message.Flags, e.Message.ModSeq, sent[0].ID, changed[0].ModSeq)
	}
	if len(events) > len(sent)+1 {
		t.Errorf("Watch() delivered %d events, want %d: %+v", len(events), len(sent)+1, events)
	}

}

// testWatcherLostFeed checks that a Watch whose feed was cut reports it
// with an EventResync, and then delivers changes again.
func (su Suite) testWatcherLostFeed(t *testing.T, s um.Store) {
	if _, ok := s.(um.Watcher); !ok {
		notImplemented(t, "um.Watcher")
	}
	if su.Peer == nil || su.CutFeed == nil {
		t.Skip("Suite.Peer or Suite.CutFeed not set: the report of a lost feed is not checked")
	}
	mustMailbox(t, s, box)
	peer := su.Peer(t, s)
	got := watching(t, s)
	su.CutFeed(t, s)
	deadline := time.After(2 * watchWait)
	for resynced := false; !resynced; {
		select {
		case c := <-got:
			resynced = len(c.Events) == 1 && c.Events[0].Kind == um.EventResync && (c.Mailbox == "" || c.Mailbox == box)
		case <-deadline:
			t.Fatalf("no EventResync of %q within %v of the feed's loss: changes committed meanwhile would be missed unseen", box, 2*watchWait)
		}
	}
	m, err := peer.Append(ctx, box, voice(um.Inbox, 20), bytes.NewReader(content(10)))
	if err != nil {
		t.Fatal(err)
	}
	publish(t, peer, um.EventAdded, m)
	for {
		c := nextChange(t, got, "the peer's change after the feed came back")
		if len(c.Events) == 1 && c.Events[0].Kind == um.EventResync {
			continue // one per mailbox may follow the first
		}
		if len(c.Events) == 0 || c.Events[0].Message.ID != m.ID {
			t.Errorf("after the feed came back Watch() delivered %+v, want the peer's Append of %s", c, m.ID)
		}
		break
	}
}

// testClosed checks that every method of a closed store fails with
// um.ErrClosed, the optional ones included, and that closing twice is no
// error.
func testClosed(t *testing.T, s um.Store) {
	mustMailbox(t, s, box)
	m := mustAppend(t, s, voice(um.Inbox, 1), content(10))
	if err := s.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close() again = %v, want nil", err)
	}
	closed := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, um.ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", what, err)
		}
	}
	closed("CreateMailbox", s.CreateMailbox(ctx, "1002"))
	_, err := s.Mailboxes(ctx)
	closed("Mailboxes", err)
	_, err = s.Folders(ctx, box)
	closed("Folders", err)
	_, err = s.CreateFolder(ctx, box, "Saved")
	closed("CreateFolder", err)
	_, err = s.Append(ctx, box, voice(um.Inbox, 2), bytes.NewReader(content(10)))
	closed("Append", err)
	_, err = s.List(ctx, box, um.Inbox)
	closed("List", err)
	_, err = s.Get(ctx, box, m.ID)
	closed("Get", err)
	_, err = s.Open(ctx, box, m.ID)
	closed("Open", err)
	_, err = s.SetFlags(ctx, box, []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard})
	closed("SetFlags", err)
	_, err = s.Move(ctx, box, []uuid.UUID{m.ID}, um.Trash, time.Now())
	closed("Move", err)
	closed("Remove", s.Remove(ctx, box, []uuid.UUID{m.ID}))
	if ms, ok := s.(um.ModSeqer); ok {
		_, _, err = ms.Vanished(ctx, box, um.Inbox, 0)
		closed("Vanished", err)
	}
	if fs, ok := s.(um.FolderSubscriber); ok {
		_, err = fs.SubscribedFolders(ctx, box)
		closed("SubscribedFolders", err)
	}
	if d, ok := s.(um.DeliveryModes); ok {
		closed("ClaimDelivery", d.ClaimDelivery(ctx, box, "imap-sync", "A"))
	}
	if l, ok := s.(um.Limiter); ok {
		_, err = l.AppendLimited(ctx, box, voice(um.Inbox, 3), bytes.NewReader(content(10)), um.Limits{MaxMessages: 10})
		closed("AppendLimited", err)
	}
}
