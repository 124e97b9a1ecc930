package um_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/google/uuid"
)

// wait bounds how long a test waits for something asynchronous; it is a
// deadline for a broken test, not a timing assertion.
const wait = 10 * time.Second

func depositInto(t testing.TB, svc *um.Service, box string) um.Message {
	t.Helper()
	mb, err := svc.EnsureMailbox(ctx, box)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(recording(800))})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A hook that blocks for one mailbox delays only that mailbox: another
// mailbox's lamp is announced while the first call still blocks.
func TestMWISlowMailboxDoesNotDelayOthers(t *testing.T) {
	release := make(chan struct{})
	calls := make(chan um.MWIState, 10)
	svc, _ := um.New(memstore.New(), &um.Options{MWI: func(s um.MWIState) {
		calls <- s
		if s.Mailbox == "1001" {
			<-release
		}
	}})
	defer svc.Close()
	defer close(release)
	depositInto(t, svc, "1001")
	if got := <-calls; got.Mailbox != "1001" {
		t.Fatalf("first call for %s, want 1001", got.Mailbox)
	}
	// 1001's hook now blocks. A change to 1001 queues behind it; 1002's
	// does not.
	depositInto(t, svc, "1001")
	depositInto(t, svc, "1002")
	select {
	case got := <-calls:
		if got.Mailbox != "1002" || got.New != 1 {
			t.Errorf("call while 1001 blocks = %v for %s, want 1/0 for 1002", got, got.Mailbox)
		}
	case <-time.After(wait):
		t.Fatal("1002's lamp was not announced while 1001's hook blocked")
	}
}

// Calls for one mailbox never overlap and come in commit order, while
// calls for different mailboxes do run at once.
func TestMWIOneCallAtATimePerMailbox(t *testing.T) {
	var mu sync.Mutex
	inHook := map[string]int{}
	most, overlapped := 0, false
	last := map[string]um.MWIState{}
	svc, _ := um.New(memstore.New(), &um.Options{MWIWorkers: 4, MWI: func(s um.MWIState) {
		mu.Lock()
		inHook[s.Mailbox]++
		if inHook[s.Mailbox] > 1 {
			overlapped = true
		}
		total := 0
		for _, n := range inHook {
			total += n
		}
		most = max(most, total)
		if prev, ok := last[s.Mailbox]; ok && prev.New > s.New {
			t.Errorf("%s announced %v after %v: out of commit order", s.Mailbox, s, prev)
		}
		last[s.Mailbox] = s
		mu.Unlock()
		time.Sleep(time.Millisecond)
		mu.Lock()
		inHook[s.Mailbox]--
		mu.Unlock()
	}})
	defer svc.Close()
	var wg sync.WaitGroup
	for box := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				depositInto(t, svc, fmt.Sprint(1001+box))
			}
		}()
	}
	wg.Wait()
	svc.FlushMWI()
	mu.Lock()
	defer mu.Unlock()
	if overlapped {
		t.Error("two hook calls for one mailbox ran at once")
	}
	if most > 4 {
		t.Errorf("%d hook calls ran at once, want at most MWIWorkers = 4", most)
	}
	for box := range 8 {
		if st := last[fmt.Sprint(1001+box)]; st.New != 20 {
			t.Errorf("last state of %d = %v, want 20 new", 1001+box, st)
		}
	}
}

// With AnnounceMWI, New announces every mailbox once, lamp lit or not,
// naming this node.
func TestAnnounceMWIAtStart(t *testing.T) {
	store := memstore.New()
	first, _ := um.New(store, nil)
	depositInto(t, first, "1001")
	if _, err := first.CreateMailbox(ctx, "1002"); err != nil {
		t.Fatal(err)
	}
	first.Close()

	var log mwiLog
	svc, _ := um.New(store, &um.Options{Node: "pbx-a", AnnounceMWI: true, MWI: log.hook})
	defer svc.Close()
	svc.FlushMWI()
	got := map[string]string{}
	for _, c := range log.calls {
		got[c.Mailbox] += fmt.Sprintf("%s by %s;", c, c.Node)
	}
	want := map[string]string{"1001": "1/0 (0/0) by pbx-a;", "1002": "0/0 (0/0) by pbx-a;"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("announcements at start = %v, want %v", got, want)
	}
}

// A lamp change made on another node reaches this node's hook, which says
// where it was made; a change made here says this node.
func TestMWIHearsOtherNodesChanges(t *testing.T) {
	store, svc, log, deliver := newFeedNode(t, "b")
	mb, _ := svc.CreateMailbox(ctx, "1001")
	m, err := mb.Deposit(ctx, um.Deposit{Audio: bytesReader(recording(10))})
	if err != nil {
		t.Fatal(err)
	}
	svc.FlushMWI()
	// Node a plays the message: its write lands in the shared store and
	// its change arrives through the feed.
	if _, err := store.Store.SetFlags(ctx, "1001", []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}); err != nil {
		t.Fatal(err)
	}
	deliver(um.Change{Mailbox: "1001", Node: "a", Events: []um.Event{{Kind: um.EventFlags, Folder: um.Inbox}}})
	svc.FlushMWI()
	log.mu.Lock()
	defer log.mu.Unlock()
	var got []string
	for _, c := range log.calls {
		got = append(got, fmt.Sprintf("%s by %s", c, c.Node))
	}
	want := []string{"1/0 (0/0) by b", "0/1 (0/0) by a"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("node b's hook calls = %q, want %q", got, want)
	}
}

// observed records what an Observer is told.
type observed struct {
	mu        sync.Mutex
	deposits  []string
	announced []string
}

func (o *observed) Deposited(mailbox string, m um.Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.deposits = append(o.deposits, fmt.Sprintf("%s/%d", mailbox, m.UID))
}

func (o *observed) MWICalled(st um.MWIState, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.announced = append(o.announced, fmt.Sprintf("%s %s slow=%v", st.Mailbox, st, took >= 20*time.Millisecond))
}

// The observer hears each deposit (not e-mails a client appends) and each
// hook call with the time the hook took.
func TestObserverSeesDepositsAndHookCalls(t *testing.T) {
	var o observed
	svc, _ := um.New(memstore.New(), &um.Options{Observer: &o, MWI: func(um.MWIState) { time.Sleep(20 * time.Millisecond) }})
	defer svc.Close()
	depositInto(t, svc, "1001")
	mb, _ := svc.Mailbox(ctx, "1001")
	if _, err := mb.CreateFolder(ctx, "Saved"); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Append(ctx, "Saved", um.Message{}, strings.NewReader("Subject: hi\r\n\r\nhi\r\n")); err != nil {
		t.Fatal(err)
	}
	svc.FlushMWI()
	o.mu.Lock()
	defer o.mu.Unlock()
	if fmt.Sprint(o.deposits) != "[1001/1]" {
		t.Errorf("deposits observed = %v, want [1001/1]: the append is no deposit", o.deposits)
	}
	if fmt.Sprint(o.announced) != "[1001 1/0 (0/0) slow=true]" {
		t.Errorf("hook calls observed = %v, want one for 1001 with the hook's 20ms", o.announced)
	}
}

// A panicking hook is logged at Error with the mailbox, through Logger; a
// host that still sets only Logf gets the same record as a line.
func TestHookPanicLogged(t *testing.T) {
	var lines []string
	var mu sync.Mutex
	logf := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, fmt.Sprintf(format, args...))
	}
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&syncWriter{w: &buf}, nil))
	for _, opts := range []um.Options{{Logf: logf}, {Logger: logger}} {
		opts.MWI = func(um.MWIState) { panic("phone exploded") }
		svc, _ := um.New(memstore.New(), &opts)
		depositInto(t, svc, "1001")
		svc.FlushMWI()
		svc.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	want := `level=ERROR msg="um: MWI hook panicked" mailbox=1001 panic="phone exploded"`
	// New also logs, at Info, which optional interfaces the store has.
	var errs []string
	for _, l := range lines {
		if !strings.HasPrefix(l, "level=INFO ") {
			errs = append(errs, l)
		}
	}
	if len(errs) != 1 || errs[0] != want {
		t.Errorf("Logf lines = %q, want [%q]", lines, want)
	}
	if !strings.Contains(buf.String(), want) {
		t.Errorf("Logger output = %q, want it to contain %q", buf.String(), want)
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// Changes merged into one call name this node when any of them was made
// here, so a host that announces only its own changes never misses one.
func TestMWIMergedChangesNameThisNode(t *testing.T) {
	store := &feedStore{Store: memstore.New(), deliver: make(chan func(um.Change), 1)}
	release := make(chan struct{})
	calls := make(chan um.MWIState, 10)
	svc, _ := um.New(store, &um.Options{Node: "b", MWI: func(s um.MWIState) {
		calls <- s
		<-release
	}})
	defer svc.Close()
	deliver := <-store.deliver
	mb, _ := svc.CreateMailbox(ctx, "1001")
	m, err := mb.Deposit(ctx, um.Deposit{Audio: bytesReader(recording(10))})
	if err != nil {
		t.Fatal(err)
	}
	if first := <-calls; first.Node != "b" {
		t.Fatalf("first call names %q, want b", first.Node)
	}
	// While the hook blocks: node a's change, this node's heard, node a's
	// change again. They merge into the next call.
	deliver(um.Change{Mailbox: "1001", Node: "a", Events: []um.Event{{Kind: um.EventResync}}})
	if err := mb.MarkHeard(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	deliver(um.Change{Mailbox: "1001", Node: "a", Events: []um.Event{{Kind: um.EventResync}}})
	release <- struct{}{}
	select {
	case got := <-calls:
		if got.Node != "b" || got.Old != 1 {
			t.Errorf("merged call = %+v, want 0/1 naming b", got)
		}
	case <-time.After(wait):
		t.Fatal("no call after the merged changes")
	}
	close(release)
}
