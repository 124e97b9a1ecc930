package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// testLimiter checks the optional um.Limiter: what each call adds outside
// Trash is admitted or refused as a whole, Trash does not count, and Copy
// counts every copy it adds.
func testLimiter(t *testing.T, s um.Store) {
	l, ok := s.(um.Limiter)
	if !ok {
		notImplemented(t, "um.Limiter")
	}
	mustMailbox(t, s, box)
	if _, err := s.CreateFolder(ctx, box, "Saved"); err != nil {
		t.Fatal(err)
	}
	three := um.Limits{MaxMessages: 3}
	appendL := func(folder string, lim um.Limits) (um.Message, error) {
		return l.AppendLimited(ctx, box, voice(folder, 1), bytes.NewReader(content(10)), lim)
	}
	a, err := appendL(um.Inbox, three)
	if err != nil {
		t.Fatalf("AppendLimited(1 of 3) = %v", err)
	}
	b, err := appendL(um.Inbox, three)
	if err != nil {
		t.Fatalf("AppendLimited(2 of 3) = %v", err)
	}
	both := []uuid.UUID{a.ID, b.ID}
	if _, err := l.CopyLimited(ctx, box, both, "Saved", []uuid.UUID{uuid.New(), uuid.New()}, time.Now(), three); !errors.Is(err, um.ErrMailboxFull) {
		t.Errorf("CopyLimited(2 copies into a mailbox of 2, limit 3) = %v, want ErrMailboxFull", err)
	}
	if list, _ := s.List(ctx, box, "Saved"); len(list) != 0 {
		t.Errorf("a refused CopyLimited stored %d copies", len(list))
	}
	if _, err := l.CopyLimited(ctx, box, both, um.Trash, []uuid.UUID{uuid.New(), uuid.New()}, time.Now(), three); err != nil {
		t.Errorf("CopyLimited(into Trash) = %v, want no error: Trash does not count", err)
	}
	if _, err := l.CopyLimited(ctx, box, both[:1], "Saved", []uuid.UUID{uuid.New()}, time.Now(), three); err != nil {
		t.Errorf("CopyLimited(1 copy, to 3 of 3) = %v", err)
	}
	if _, err := appendL(um.Inbox, three); !errors.Is(err, um.ErrMailboxFull) {
		t.Errorf("AppendLimited(4 of 3) = %v, want ErrMailboxFull", err)
	}
	if list, _ := s.List(ctx, box, um.Inbox); len(list) != 2 {
		t.Errorf("INBOX after a refused AppendLimited holds %d messages, want 2", len(list))
	}
	trashed, err := appendL(um.Trash, three)
	if err != nil {
		t.Errorf("AppendLimited(into Trash of a full mailbox) = %v, want no error", err)
	}
	if _, err := l.MoveLimited(ctx, box, []uuid.UUID{trashed.ID}, um.Inbox, time.Now(), three); !errors.Is(err, um.ErrMailboxFull) {
		t.Errorf("MoveLimited(out of Trash into a full mailbox) = %v, want ErrMailboxFull", err)
	}
	if m, _ := s.Get(ctx, box, trashed.ID); m.Folder != um.Trash {
		t.Errorf("a refused MoveLimited moved the message to %q", m.Folder)
	}
	if _, err := l.MoveLimited(ctx, box, []uuid.UUID{a.ID}, "Saved", time.Now(), three); err != nil {
		t.Errorf("MoveLimited(between counted folders of a full mailbox) = %v, want no error", err)
	}
	if _, err := l.MoveLimited(ctx, box, []uuid.UUID{b.ID}, um.Trash, time.Now(), three); err != nil {
		t.Errorf("MoveLimited(into Trash) = %v", err)
	}
	if _, err := l.MoveLimited(ctx, box, []uuid.UUID{trashed.ID}, um.Inbox, time.Now(), three); err != nil {
		t.Errorf("MoveLimited(out of Trash, to 3 of 3) = %v", err)
	}
	if _, err := l.MoveLimited(ctx, box, []uuid.UUID{b.ID}, um.Inbox, time.Now(), um.Limits{}); err != nil {
		t.Errorf("MoveLimited(no limits) = %v", err)
	}

	// Recorded time: voice(folder, n) lasts n+1 seconds.
	mustMailbox(t, s, "1002")
	minute := um.Limits{MaxRecordedTime: 5 * time.Second}
	for i, want := range []bool{true, true, false} { // 2 s, 4 s, then 6 s > 5 s
		_, err := l.AppendLimited(ctx, "1002", voice(um.Inbox, 1), bytes.NewReader(content(3)), minute)
		if got := err == nil; got != want {
			t.Errorf("AppendLimited(2 s recording #%d, limit 5 s) = %v, want admitted %v", i+1, err, want)
		}
		if err != nil && !errors.Is(err, um.ErrMailboxFull) {
			t.Errorf("AppendLimited over the recorded time = %v, want ErrMailboxFull", err)
		}
	}
	if _, err := l.AppendLimited(ctx, "nobody", voice(um.Inbox, 1), bytes.NewReader(content(3)), three); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("AppendLimited(unknown mailbox) = %v, want ErrNotFound", err)
	}
}

// testLimiterConcurrent checks that appends racing for the last places of
// a mailbox, through this Store value and a peer on the same data when the
// suite has one, never pass the limit together.
func (su Suite) testLimiterConcurrent(t *testing.T, s um.Store) {
	if _, ok := s.(um.Limiter); !ok {
		notImplemented(t, "um.Limiter")
	}
	mustMailbox(t, s, box)
	stores := []um.Store{s}
	if su.Peer != nil {
		stores = append(stores, su.Peer(t, s), su.Peer(t, s))
	}
	const limit, tries = 5, 24
	var wg sync.WaitGroup
	errs := make(chan error, tries)
	for i := range tries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := stores[i%len(stores)].(um.Limiter)
			_, err := l.AppendLimited(ctx, box, voice(um.Inbox, i), bytes.NewReader(content(100)), um.Limits{MaxMessages: limit})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	admitted := 0
	for err := range errs {
		switch {
		case err == nil:
			admitted++
		case !errors.Is(err, um.ErrMailboxFull):
			t.Errorf("AppendLimited() = %v, want nil or ErrMailboxFull", err)
		}
	}
	list, _ := s.List(ctx, box, um.Inbox)
	if admitted != limit || len(list) != limit {
		t.Errorf("%d appends racing through %d Store values for %d places: %d admitted, INBOX holds %d; want %d and %d",
			tries, len(stores), limit, admitted, len(list), limit, limit)
	}
}

// testDeliveryModes checks the optional um.DeliveryModes.
func (su Suite) testDeliveryModes(t *testing.T, s um.Store) {
	d, ok := s.(um.DeliveryModes)
	if !ok {
		notImplemented(t, "um.DeliveryModes")
	}
	mustMailbox(t, s, box)
	mode := func(want string) {
		t.Helper()
		m, nodes, err := d.DeliveryMode(ctx, box)
		if got := m + " " + fmt.Sprint(nodes); err != nil || got != want {
			t.Errorf("DeliveryMode() = %s, %v; want %s", got, err, want)
		}
	}
	mode(" []")
	for _, node := range []string{"A", "A", "B"} {
		if err := d.ClaimDelivery(ctx, box, "imap-sync", node); err != nil {
			t.Errorf("ClaimDelivery(imap-sync, %s) = %v, want no error", node, err)
		}
	}
	mode("imap-sync [A B]")
	err := d.ClaimDelivery(ctx, box, "email-forward", "C")
	if !errors.Is(err, um.ErrModeConflict) || !strings.Contains(fmt.Sprint(err), "imap-sync") {
		t.Errorf("ClaimDelivery(email-forward) on a synced mailbox = %v, want ErrModeConflict naming imap-sync", err)
	}
	if err := d.ReleaseDelivery(ctx, box, "imap-sync", "A"); err != nil {
		t.Errorf("ReleaseDelivery(A) = %v", err)
	}
	mode("imap-sync [B]")
	if err := d.ClaimDelivery(ctx, box, "email-forward", "A"); !errors.Is(err, um.ErrModeConflict) {
		t.Errorf("ClaimDelivery(email-forward) while B still syncs = %v, want ErrModeConflict", err)
	}
	if err := d.ReleaseDelivery(ctx, box, "email-forward", "B"); err != nil {
		t.Errorf("ReleaseDelivery(a mode not held) = %v, want no error", err)
	}
	mode("imap-sync [B]")
	if err := d.ReleaseDelivery(ctx, box, "imap-sync", "B"); err != nil {
		t.Errorf("ReleaseDelivery(B) = %v", err)
	}
	mode(" []")
	if err := d.ClaimDelivery(ctx, box, "email-forward", "C"); err != nil {
		t.Errorf("ClaimDelivery(email-forward) once nobody syncs = %v", err)
	}
	mode("email-forward [C]")
	if err := d.ClaimDelivery(ctx, "nobody", "imap-sync", "A"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("ClaimDelivery(unknown mailbox) = %v, want ErrNotFound", err)
	}
	if _, _, err := d.DeliveryMode(ctx, "nobody"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("DeliveryMode(unknown mailbox) = %v, want ErrNotFound", err)
	}
	mustMailbox(t, s, "1002")
	if m, _, _ := d.DeliveryMode(ctx, "1002"); m != "" {
		t.Errorf("another mailbox's mode = %q, want none", m)
	}
}

// testDeliveryModesShared checks that a claim holds for a peer Store on the
// same data (another node), that two nodes claiming different modes at
// once get one mode, and that a claim survives a restart.
func (su Suite) testDeliveryModesShared(t *testing.T, s um.Store) {
	if _, ok := s.(um.DeliveryModes); !ok {
		notImplemented(t, "um.DeliveryModes")
	}
	if su.Peer == nil && su.Reopen == nil {
		t.Skip("Suite.Peer and Suite.Reopen not set: the store serves one process and keeps nothing across restarts")
	}
	mustMailbox(t, s, box)
	mustMailbox(t, s, "1002")
	d := s.(um.DeliveryModes)
	if err := d.ClaimDelivery(ctx, box, "imap-sync", "A"); err != nil {
		t.Fatal(err)
	}
	if su.Peer != nil {
		p := su.Peer(t, s).(um.DeliveryModes)
		if err := p.ClaimDelivery(ctx, box, "email-forward", "B"); !errors.Is(err, um.ErrModeConflict) {
			t.Errorf("ClaimDelivery(email-forward) on node B of a mailbox node A syncs = %v, want ErrModeConflict", err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, st := range []um.DeliveryModes{d, p} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = st.ClaimDelivery(ctx, "1002", []string{"imap-sync", "email-forward"}[i], []string{"A", "B"}[i])
			}()
		}
		wg.Wait()
		if (errs[0] == nil) == (errs[1] == nil) {
			t.Errorf("two nodes claiming two modes at once: %v and %v; want exactly one to win", errs[0], errs[1])
		}
	}
	if su.Reopen != nil {
		s = su.Reopen(t, s)
		m, nodes, err := s.(um.DeliveryModes).DeliveryMode(ctx, box)
		if err != nil || m != "imap-sync" || fmt.Sprint(nodes) != "[A]" {
			t.Errorf("DeliveryMode() after reopen = %q %v, %v; want imap-sync [A]", m, nodes, err)
		}
		if err := s.(um.DeliveryModes).ClaimDelivery(ctx, box, "email-forward", "A"); !errors.Is(err, um.ErrModeConflict) {
			t.Errorf("ClaimDelivery(email-forward) after reopen = %v, want ErrModeConflict", err)
		}
	}
}
