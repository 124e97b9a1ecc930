package um_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
	"github.com/google/uuid"
)

var ctx = context.Background()

// recording returns a WAV of n silent samples at 8 kHz.
func recording(n int) []byte {
	return wav.Silence(time.Duration(n) * time.Second / wav.Rate)
}

// mwiLog records the MWI hook's calls.
type mwiLog struct {
	mu    sync.Mutex
	calls []um.MWIState
}

func (l *mwiLog) hook(s um.MWIState) {
	l.mu.Lock()
	l.calls = append(l.calls, s)
	l.mu.Unlock()
}

func (l *mwiLog) last(t testing.TB) um.MWIState {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.calls) == 0 {
		t.Fatalf("MWI hook never called")
	}
	return l.calls[len(l.calls)-1]
}

func (l *mwiLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

type fixture struct {
	svc   *um.Service
	mb    *um.Mailbox
	store *memstore.Store
	mwi   *mwiLog
}

func newFixture(t testing.TB, opts um.Options) *fixture {
	t.Helper()
	f := &fixture{store: memstore.New(), mwi: &mwiLog{}}
	if opts.MWI == nil {
		opts.MWI = f.mwi.hook
	}
	svc, err := um.New(f.store, &opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(); f.store.Close() })
	f.svc = svc
	if f.mb, err = svc.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) deposit(t testing.TB, caller string, urgent bool) um.Message {
	t.Helper()
	m, err := f.mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(recording(8000)), CallerNumber: caller, Duration: time.Second, Urgent: urgent})
	if err != nil {
		t.Fatalf("Deposit() = %v", err)
	}
	return m
}

func TestDepositIsNewInInbox(t *testing.T) {
	f := newFixture(t, um.Options{})
	audio := recording(8000)
	m, err := f.mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(audio), CallerNumber: "+4930123", CallerName: "Alice", Duration: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if m.Folder != um.Inbox || m.UID != 1 || m.Heard() || m.Size != int64(len(audio)) || m.AudioType != "audio/wav" {
		t.Errorf("Deposit() = %s/%d heard=%v size=%d type=%q; want INBOX/1 unheard %d audio/wav", m.Folder, m.UID, m.Heard(), m.Size, m.AudioType, len(audio))
	}
	list, _ := f.mb.List(ctx, "inbox")
	if len(list) != 1 || list[0].ID != m.ID {
		t.Fatalf("List(inbox) = %v", list)
	}
	rc, err := f.mb.OpenAudio(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, audio) {
		t.Errorf("OpenAudio() returned %d bytes, not the %d deposited", len(got), len(audio))
	}
	f.svc.FlushMWI()
	if st := f.mwi.last(t); !st.Waiting() || st.New != 1 || st.Old != 0 {
		t.Errorf("MWI after deposit = %+v, want lamp on, 1 new", st)
	}
}

func TestHeardClearsTheLamp(t *testing.T) {
	f := newFixture(t, um.Options{})
	a := f.deposit(t, "100", false)
	b := f.deposit(t, "101", true)
	if err := f.mb.MarkHeard(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	f.svc.FlushMWI()
	if st := f.mwi.last(t); st.String() != "1/1 (1/0)" || !st.Waiting() {
		t.Errorf("MWI = %v, want 1/1 (1/0) and lit", st)
	}
	if err := f.mb.MarkHeard(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	f.svc.FlushMWI()
	if st := f.mwi.last(t); st.String() != "0/2 (0/1)" || st.Waiting() {
		t.Errorf("MWI = %v, want 0/2 (0/1) and dark", st)
	}
	if err := f.mb.MarkUnheard(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	f.svc.FlushMWI()
	if st := f.mwi.last(t); st.String() != "1/1 (0/1)" {
		t.Errorf("MWI after unheard = %v, want 1/1 (0/1)", st)
	}
}

func TestUrgentStartsFlagged(t *testing.T) {
	f := newFixture(t, um.Options{})
	m := f.deposit(t, "100", true)
	if !m.Urgent || !m.Flags.Has(um.FlagFlagged) {
		t.Errorf("urgent deposit: Urgent=%v flags=%v, want urgent and \\Flagged", m.Urgent, m.Flags)
	}
}

func TestDeletedFlagHidesFromLamp(t *testing.T) {
	f := newFixture(t, um.Options{})
	m := f.deposit(t, "100", false)
	if _, err := f.mb.SetFlags(ctx, []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted}); err != nil {
		t.Fatal(err)
	}
	f.svc.FlushMWI()
	if st := f.mwi.last(t); st.Waiting() || st.New != 0 {
		t.Errorf("MWI with the only message \\Deleted = %v, want dark", st)
	}
}

func TestDeleteUndeletePurge(t *testing.T) {
	f := newFixture(t, um.Options{})
	m := f.deposit(t, "100", false)
	if err := f.mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	trash, _ := f.mb.List(ctx, um.Trash)
	if inbox, _ := f.mb.List(ctx, um.Inbox); len(inbox) != 0 || len(trash) != 1 || trash[0].ID != m.ID {
		t.Fatalf("after Delete: INBOX %d, Trash %v; want the message in Trash", len(inbox), trash)
	}
	f.svc.FlushMWI()
	if st := f.mwi.last(t); st.Waiting() {
		t.Errorf("lamp lit after deleting the only message: %v", st)
	}
	back, err := f.mb.Undelete(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if back.Folder != um.Inbox || back.UID != 2 || back.ID != m.ID {
		t.Errorf("Undelete() = %s/%d %v, want INBOX/2 same ID", back.Folder, back.UID, back.ID)
	}
	f.svc.FlushMWI()
	if st := f.mwi.last(t); !st.Waiting() {
		t.Errorf("lamp dark after undelete of an unheard message")
	}
	if _, err := f.mb.Undelete(ctx, m.ID); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Undelete(not in Trash) = %v, want ErrNotFound", err)
	}
	// Deleting from Trash removes for good.
	if err := f.mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.mb.Message(ctx, m.ID); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Message() after delete from Trash = %v, want ErrNotFound", err)
	}
}

func TestPurgeOnDelete(t *testing.T) {
	f := newFixture(t, um.Options{PurgeOnDelete: true})
	m := f.deposit(t, "100", false)
	if err := f.mb.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if trash, _ := f.mb.List(ctx, um.Trash); len(trash) != 0 {
		t.Errorf("PurgeOnDelete left %d messages in Trash", len(trash))
	}
}

func TestLimits(t *testing.T) {
	tests := []struct {
		name string
		opts um.Options
		fits int
	}{
		{"max messages", um.Options{MaxMessages: 3}, 3},
		{"max recorded time", um.Options{MaxRecordedTime: 2500 * time.Millisecond}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.opts)
			for i := 0; i < tt.fits; i++ {
				f.deposit(t, "100", false)
			}
			before, _ := f.mb.List(ctx, um.Inbox)
			_, err := f.mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(recording(100)), Duration: time.Second})
			if !errors.Is(err, um.ErrMailboxFull) {
				t.Fatalf("Deposit() over the limit = %v, want ErrMailboxFull", err)
			}
			after, _ := f.mb.List(ctx, um.Inbox)
			if len(after) != len(before) {
				t.Errorf("a refused deposit changed INBOX from %d to %d messages", len(before), len(after))
			}
			// Trash does not count: deleting one makes room.
			if err := f.mb.Delete(ctx, after[0].ID); err != nil {
				t.Fatal(err)
			}
			f.deposit(t, "100", false)
		})
	}
}

type brokenReader struct{ n int }

func (r *brokenReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		r.n++
		return copy(p, recording(10)), nil
	}
	return 0, errors.New("recording interrupted")
}

func TestBadInputChangesNothing(t *testing.T) {
	f := newFixture(t, um.Options{})
	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"empty mailbox name", func() error { _, err := f.svc.Mailbox(ctx, ""); return err }, um.ErrInvalid},
		{"unknown mailbox", func() error { _, err := f.svc.Mailbox(ctx, "9999"); return err }, um.ErrNotFound},
		{"unknown folder", func() error { _, err := f.mb.List(ctx, "Nope"); return err }, um.ErrNotFound},
		{"nil reader", func() error { _, err := f.mb.Deposit(ctx, um.Deposit{}); return err }, um.ErrInvalid},
		{"negative duration", func() error {
			_, err := f.mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(recording(10)), Duration: -time.Second})
			return err
		}, um.ErrInvalid},
		{"not a WAV", func() error {
			_, err := f.mb.Deposit(ctx, um.Deposit{Audio: strings.NewReader("this is not audio at all")})
			return err
		}, um.ErrBadAudio},
		{"empty WAV", func() error { _, err := f.mb.Deposit(ctx, um.Deposit{Audio: strings.NewReader("")}); return err }, um.ErrBadAudio},
		{"e-mail into INBOX", func() error {
			_, err := f.mb.Append(ctx, um.Inbox, um.Message{}, strings.NewReader("Subject: x\r\n\r\n"))
			return err
		}, um.ErrNotVoice},
		{"create INBOX", func() error { _, err := f.mb.CreateFolder(ctx, "inbox"); return err }, um.ErrExists},
		{"delete Trash", func() error { return f.mb.DeleteFolder(ctx, um.Trash) }, um.ErrReserved},
		{"rename INBOX", func() error { return f.mb.RenameFolder(ctx, um.Inbox, "Old") }, um.ErrReserved},
		{"empty folder name", func() error { _, err := f.mb.CreateFolder(ctx, ""); return err }, um.ErrInvalid},
		{"unknown message", func() error { return f.mb.MarkHeard(ctx, uuid.New()) }, um.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.do(); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
			if list, _ := f.mb.List(ctx, um.Inbox); len(list) != 0 {
				t.Errorf("INBOX has %d messages after bad input", len(list))
			}
		})
	}
	t.Run("audio failing mid-read", func(t *testing.T) {
		_, err := f.mb.Deposit(ctx, um.Deposit{Audio: &brokenReader{}})
		if err == nil || !strings.Contains(err.Error(), "recording interrupted") {
			t.Errorf("Deposit(broken audio) = %v, want the read error", err)
		}
		if list, _ := f.mb.List(ctx, um.Inbox); len(list) != 0 {
			t.Errorf("a half-read recording was stored")
		}
	})
}

func TestFolders(t *testing.T) {
	f := newFixture(t, um.Options{})
	if _, err := f.mb.CreateFolder(ctx, "Saved"); err != nil {
		t.Fatal(err)
	}
	m := f.deposit(t, "100", false)
	moved, err := f.mb.Move(ctx, []uuid.UUID{m.ID}, "Saved")
	if err != nil || moved[0].Folder != "Saved" {
		t.Fatalf("Move() = %v, %v", moved, err)
	}
	if err := f.mb.RenameFolder(ctx, "Saved", "Keep"); err != nil {
		t.Fatal(err)
	}
	got, _ := f.mb.Message(ctx, m.ID)
	if got.Folder != "Keep" {
		t.Errorf("after rename the message is in %q, want Keep", got.Folder)
	}
	if _, err := f.mb.Move(ctx, []uuid.UUID{m.ID}, "Nope"); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Move(to unknown folder) = %v, want ErrNotFound", err)
	}
	if err := f.mb.DeleteFolder(ctx, "Keep"); err != nil {
		t.Fatal(err)
	}
	fs, _ := f.mb.Folders(ctx)
	if len(fs) != 2 {
		t.Errorf("Folders() = %v, want INBOX and Trash", fs)
	}
}

func TestEventsInCommitOrder(t *testing.T) {
	f := newFixture(t, um.Options{})
	sub := f.svc.Subscribe("1001", um.SubscribeOptions{})
	defer sub.Close()
	m := f.deposit(t, "100", false)
	f.mb.MarkHeard(ctx, m.ID)
	f.mb.Delete(ctx, m.ID)
	<-sub.C()
	changes, err := sub.Next()
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, c := range changes {
		if c.Mailbox != "1001" || c.Node != "local" {
			t.Errorf("change for %q from %q", c.Mailbox, c.Node)
		}
		for _, e := range c.Events {
			kinds = append(kinds, fmt.Sprintf("%d:%s", e.Kind, e.Folder))
		}
	}
	want := fmt.Sprint([]string{
		fmt.Sprintf("%d:INBOX", um.EventAdded), fmt.Sprintf("%d:INBOX", um.EventFlags),
		fmt.Sprintf("%d:INBOX", um.EventRemoved), fmt.Sprintf("%d:Trash", um.EventAdded),
	})
	if fmt.Sprint(kinds) != want {
		t.Errorf("events = %v, want %v", kinds, want)
	}
}

func TestOwnChangesNotEchoed(t *testing.T) {
	f := newFixture(t, um.Options{})
	me := new(int)
	mine := f.svc.Subscribe("1001", um.SubscribeOptions{Source: me})
	other := f.svc.Subscribe("", um.SubscribeOptions{})
	defer mine.Close()
	defer other.Close()
	m := f.deposit(t, "100", false)
	if err := f.mb.MarkHeard(um.WithSource(ctx, me), m.ID); err != nil {
		t.Fatal(err)
	}
	mc, _ := mine.Next()
	oc, _ := other.Next()
	if len(mc) != 1 || mc[0].Events[0].Kind != um.EventAdded {
		t.Errorf("own subscription got %d changes, want only the deposit", len(mc))
	}
	if len(oc) != 2 || oc[1].Source != me {
		t.Errorf("other subscription got %d changes, want 2 with the source set", len(oc))
	}
}

func TestSlowSubscriberBlocksNobody(t *testing.T) {
	f := newFixture(t, um.Options{})
	slow := f.svc.Subscribe("1001", um.SubscribeOptions{MaxQueue: 5})
	defer slow.Close()
	for i := 0; i < 10; i++ {
		f.deposit(t, "100", false)
	}
	if _, err := slow.Next(); !errors.Is(err, um.ErrOverflow) {
		t.Errorf("Next() after overflow = %v, want ErrOverflow", err)
	}
	f.deposit(t, "100", false)
	changes, err := slow.Next()
	if err != nil || len(changes) != 1 {
		t.Errorf("after overflow the subscription resumes: got %d changes, %v", len(changes), err)
	}
}

func TestMWIHookFinalStateAndNoLock(t *testing.T) {
	var f *fixture
	var mu sync.Mutex
	var seen []string
	f = newFixture(t, um.Options{MWI: func(s um.MWIState) {
		// The hook may call back into um: it runs under no lock.
		if _, err := f.svc.MWI(ctx, s.Mailbox); err != nil {
			t.Error(err)
		}
		mu.Lock()
		seen = append(seen, s.String())
		mu.Unlock()
	}})
	var msgs []um.Message
	for i := 0; i < 50; i++ {
		msgs = append(msgs, f.deposit(t, "100", false))
	}
	for _, m := range msgs {
		if err := f.mb.MarkHeard(ctx, m.ID); err != nil {
			t.Fatal(err)
		}
	}
	f.svc.FlushMWI()
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || seen[len(seen)-1] != "0/50 (0/0)" {
		t.Fatalf("last MWI = %v, want 0/50 (0/0)", seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] == seen[i-1] {
			t.Errorf("hook called twice in a row with %s", seen[i])
		}
	}
}

func TestMWIOnlyWhereTheChangeWasMade(t *testing.T) {
	// Two services on one store stand for two nodes of a cluster; the
	// store has no change feed here, so only the committing node knows.
	store := memstore.New()
	var a, b mwiLog
	sa, _ := um.New(store, &um.Options{Node: "a", MWI: a.hook})
	sb, _ := um.New(store, &um.Options{Node: "b", MWI: b.hook})
	defer sa.Close()
	defer sb.Close()
	mb, _ := sa.CreateMailbox(ctx, "1001")
	if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(recording(10))}); err != nil {
		t.Fatal(err)
	}
	sa.FlushMWI()
	sb.FlushMWI()
	if a.count() != 1 || b.count() != 0 {
		t.Errorf("hook calls: node a %d, node b %d; want 1 and 0", a.count(), b.count())
	}
	st, _ := sb.MWI(ctx, "1001")
	if !st.Waiting() {
		t.Errorf("node b's MWI() = %v, want lit: the state on demand reads the store", st)
	}
}

func TestTrashRetention(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	f := newFixture(t, um.Options{Now: clock})
	old := f.deposit(t, "100", false)
	f.mb.Delete(ctx, old.ID)
	mu.Lock()
	now = now.Add(40 * 24 * time.Hour)
	mu.Unlock()
	recent := f.deposit(t, "101", false)
	f.mb.Delete(ctx, recent.ID)
	n, err := f.svc.PurgeTrash(ctx, clock().Add(-30*24*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("PurgeTrash() = %d, %v; want 1", n, err)
	}
	trash, _ := f.mb.List(ctx, um.Trash)
	if len(trash) != 1 || trash[0].ID != recent.ID {
		t.Errorf("Trash after purge = %v, want only the recent message", trash)
	}
}

func TestDeliveryModesExclusive(t *testing.T) {
	f := newFixture(t, um.Options{})
	if err := f.svc.ClaimDelivery("1001", "imap-sync"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.ClaimDelivery("1001", "imap-sync"); err != nil {
		t.Errorf("claiming the same mode again = %v", err)
	}
	err := f.svc.ClaimDelivery("1001", "email-forward")
	if !errors.Is(err, um.ErrModeConflict) || !strings.Contains(err.Error(), "imap-sync") {
		t.Errorf("second mode = %v, want ErrModeConflict naming the first", err)
	}
	f.svc.ReleaseDelivery("1001", "imap-sync")
	if err := f.svc.ClaimDelivery("1001", "email-forward"); err != nil {
		t.Errorf("after release = %v", err)
	}
}

func TestConcurrentDepositsAndFlags(t *testing.T) {
	f := newFixture(t, um.Options{})
	sub := f.svc.Subscribe("1001", um.SubscribeOptions{})
	defer sub.Close()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				m := f.deposit(t, "100", false)
				f.mb.MarkHeard(ctx, m.ID)
			}
		}()
	}
	wg.Wait()
	changes, _ := sub.Next()
	var uids []int
	for _, c := range changes {
		for _, e := range c.Events {
			if e.Kind == um.EventAdded {
				uids = append(uids, int(e.Message.UID))
			}
		}
	}
	if len(uids) != 160 || !sort.IntsAreSorted(uids) {
		t.Errorf("EventAdded UIDs out of commit order or missing: %d events", len(uids))
	}
	f.svc.FlushMWI()
	if st := f.mwi.last(t); st.String() != "0/160 (0/0)" {
		t.Errorf("final MWI = %v, want 0/160 (0/0)", st)
	}
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func TestCloseTwiceAndChangesAfterClose(t *testing.T) {
	f := newFixture(t, um.Options{})
	f.deposit(t, "100", false)
	if err := f.svc.Close(); err != nil {
		t.Fatal(err)
	}
	calls := f.mwi.count()
	f.deposit(t, "101", false) // the store is still open
	done := make(chan struct{})
	go func() {
		f.svc.FlushMWI()
		f.svc.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("FlushMWI or Close after Close did not return")
	}
	if got := f.mwi.count(); got != calls {
		t.Errorf("MWI hook called %d times after Close", got-calls)
	}
}

func TestKeywordsMergeAcrossCase(t *testing.T) {
	op := um.FlagOp{Mode: um.FlagsAdd, Keywords: []string{"$junk"}}
	_, got := op.Apply(0, []string{"$Junk", "$NonJunk"})
	if len(got) != 2 || !um.SameKeywords(got, []string{"$Junk", "$NonJunk"}) {
		t.Errorf("Apply(+$junk) on [$Junk $NonJunk] = %v, want two keywords: they compare case-insensitively", got)
	}
}

func TestUncomparableSourceDoesNotPanic(t *testing.T) {
	f := newFixture(t, um.Options{})
	sub := f.svc.Subscribe("1001", um.SubscribeOptions{Source: map[string]int{}})
	defer sub.Close()
	m := f.deposit(t, "100", false)
	if err := f.mb.MarkHeard(um.WithSource(ctx, []int{1}), m.ID); err != nil {
		t.Fatal(err)
	}
	if changes, _ := sub.Next(); len(changes) != 2 {
		t.Errorf("subscription with an uncomparable source got %d changes, want 2", len(changes))
	}
}

// plainStore hides the optional interfaces of the store it wraps, so the
// fallbacks um uses for a host's own store are tested too.
type plainStore struct{ um.Store }

func TestExpungeKeepsWhatWasUndeleted(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain store %v", plain), func(t *testing.T) {
			var f *fixture
			if plain {
				f = &fixture{store: memstore.New(), mwi: &mwiLog{}}
				svc, err := um.New(plainStore{f.store}, &um.Options{MWI: f.mwi.hook})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { svc.Close() })
				f.svc = svc
				if f.mb, err = svc.CreateMailbox(ctx, "1001"); err != nil {
					t.Fatal(err)
				}
			} else {
				f = newFixture(t, um.Options{})
			}
			a := f.deposit(t, "100", false)
			b := f.deposit(t, "101", false)
			c := f.deposit(t, "102", false)
			// A client marks a and b \Deleted; before its EXPUNGE, the phone
			// restores b.
			f.mb.SetFlags(ctx, []uuid.UUID{a.ID, b.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted})
			f.mb.SetFlags(ctx, []uuid.UUID{b.ID}, um.FlagOp{Mode: um.FlagsRemove, Flags: um.FlagDeleted})
			gone, err := f.mb.Expunge(ctx, um.Inbox, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(gone) != 1 || gone[0].ID != a.ID {
				t.Errorf("Expunge() removed %v, want only a", gone)
			}
			// UID EXPUNGE limits it to the UIDs named.
			f.mb.SetFlags(ctx, []uuid.UUID{b.ID, c.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted})
			gone, _ = f.mb.Expunge(ctx, um.Inbox, []um.UID{c.UID})
			if len(gone) != 1 || gone[0].ID != c.ID {
				t.Errorf("Expunge(UID %d) removed %v, want only c", c.UID, gone)
			}
			if _, err := f.mb.Message(ctx, b.ID); err != nil {
				t.Errorf("b was expunged though not named: %v", err)
			}
		})
	}
}

func TestUndeleteRespectsLimits(t *testing.T) {
	f := newFixture(t, um.Options{MaxMessages: 1})
	a := f.deposit(t, "100", false)
	f.mb.Delete(ctx, a.ID)
	f.deposit(t, "101", false)
	if _, err := f.mb.Undelete(ctx, a.ID); !errors.Is(err, um.ErrMailboxFull) {
		t.Errorf("Undelete() into a full mailbox = %v, want ErrMailboxFull", err)
	}
	if trash, _ := f.mb.List(ctx, um.Trash); len(trash) != 1 {
		t.Errorf("a refused undelete moved the message out of Trash")
	}
}

// flakyStore fails CountMWI a given number of times.
type flakyStore struct {
	*memstore.Store
	mu    sync.Mutex
	fails int
}

func (s *flakyStore) CountMWI(ctx context.Context, mailbox string) (um.MWIState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fails > 0 {
		s.fails--
		return um.MWIState{}, errors.New("connection reset")
	}
	return um.CountMWI(ctx, s.Store, mailbox)
}

func (s *flakyStore) Usage(ctx context.Context, mailbox string) (um.Usage, error) {
	return um.CountUsage(ctx, s.Store, mailbox)
}

func TestMWIRetriesAfterStoreError(t *testing.T) {
	store := &flakyStore{Store: memstore.New(), fails: 1}
	called := make(chan um.MWIState, 10)
	svc, _ := um.New(store, &um.Options{MWI: func(s um.MWIState) { called <- s }})
	defer svc.Close()
	mb, _ := svc.CreateMailbox(ctx, "1001")
	if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytesReader(recording(10))}); err != nil {
		t.Fatal(err)
	}
	select {
	case st := <-called:
		if !st.Waiting() {
			t.Errorf("MWI after a retried read = %v, want lit", st)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the lamp was never announced after one failed read")
	}
}

func TestMWIHookPanicIsContained(t *testing.T) {
	var logged []string
	var mu sync.Mutex
	f := newFixture(t, um.Options{
		MWI: func(um.MWIState) { panic("host bug") },
		Logf: func(format string, args ...any) {
			mu.Lock()
			logged = append(logged, fmt.Sprintf(format, args...))
			mu.Unlock()
		},
	})
	f.deposit(t, "100", false)
	f.svc.FlushMWI()
	f.deposit(t, "101", false) // the dispatcher still runs
	f.svc.FlushMWI()
	mu.Lock()
	defer mu.Unlock()
	var panics []string
	for _, l := range logged {
		if strings.Contains(l, "panicked") {
			panics = append(panics, l)
		}
	}
	if len(panics) != 2 || !strings.Contains(panics[0], "host bug") {
		t.Errorf("logged %q, want the hook's two panics", logged)
	}
}
