package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/pgstore"
	"github.com/embeddedum/um/storage/storetest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

func openStore(t testing.TB, dsn string, opts *pgstore.Options) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("Open() = %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dsns remembers the database of each Store the suite opened, for Reopen
// and Peer.
var dsns sync.Map // *pgstore.Store -> string

func TestConformance(t *testing.T) {
	open := func(t testing.TB, dsn string, node string) um.Store {
		s := openStore(t, dsn, &pgstore.Options{Node: node})
		dsns.Store(s, dsn)
		return s
	}
	storetest.Suite{
		New: func(t testing.TB) um.Store { return open(t, newDatabase(t), "A") },
		Reopen: func(t testing.TB, s um.Store) um.Store {
			dsn, _ := dsns.Load(s)
			s.Close()
			return open(t, dsn.(string), "A")
		},
		Peer: func(t testing.TB, s um.Store) um.Store {
			dsn, _ := dsns.Load(s)
			return open(t, dsn.(string), "B")
		},
		CutFeed: func(t testing.TB, s um.Store) {
			dsn, _ := dsns.Load(s)
			conn, err := pgx.Connect(context.Background(), dsn.(string))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			var n int
			if err := conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND application_name LIKE 'um-watch/%'`).Scan(&n); err != nil || n == 0 {
				t.Fatalf("cut the notification connection: %d cut, %v", n, err)
			}
		},
	}.Run(t)
}

func TestReopenKeepsState(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	s := openStore(t, dsn, nil)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	m, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox, AudioType: "audio/wav"}, strings.NewReader("RIFF....WAVE"))
	if err != nil {
		t.Fatal(err)
	}
	before, _ := s.Folders(ctx, "1001")
	s.Close()
	if _, err := s.List(ctx, "1001", um.Inbox); !errors.Is(err, um.ErrClosed) {
		t.Errorf("List() after Close = %v, want ErrClosed", err)
	}

	s2 := openStore(t, dsn, nil)
	after, err := s2.Folders(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) || after[0] != before[0] || after[1] != before[1] {
		t.Errorf("Folders() after reopen = %+v, want %+v (UIDVALIDITY and UIDNEXT kept)", after, before)
	}
	got, err := s2.Get(ctx, "1001", m.ID)
	if err != nil || got.UID != m.UID {
		t.Errorf("Get() after reopen = %+v, %v; want UID %d", got, err, m.UID)
	}
}

func TestSchemaTooNew(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	openStore(t, dsn, nil).Close()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "INSERT INTO um_schema_version (version, name) VALUES ($1, 'from the future')", pgstore.SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	s, err := pgstore.Open(ctx, dsn, nil)
	if !errors.Is(err, pgstore.ErrSchemaTooNew) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("Open(newer schema) = %v, want ErrSchemaTooNew", err)
	}
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	dsn := newDatabase(t)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			s, err := pgstore.Open(context.Background(), dsn, nil)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Open() = %v", err)
		}
	}
}

// TestLargeContentStreams checks content past the single-query limit reads
// back whole, and that a message removed while it is read ends in an error,
// not in short content.
func TestLargeContentStreams(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, newDatabase(t), nil)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 200000) // 3.2 MB
	m, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := s.Open(ctx, "1001", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 10)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "1001", []uuid.UUID{m.ID}); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, um.ErrNotFound) {
		t.Errorf("reading a message removed meanwhile: %d bytes, %v; want ErrNotFound", len(rest), err)
	}
}

// TestWatchSkipsOwnChanges checks that Watch delivers other nodes' changes
// and not those of its own Store, and that a change too large for one
// notification arrives as a resync.
func TestWatchSkipsOwnChanges(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	a := openStore(t, dsn, &pgstore.Options{Node: "A"})
	b := openStore(t, dsn, &pgstore.Options{Node: "B"})
	if err := a.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	got := make(chan um.Change, 100)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Watch(wctx, "B", func(c um.Change) { got <- c }) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Watch() after cancel = %v, want context.Canceled", err)
		}
	}()
	waitListening(t, dsn, "B")
	// Changes made before Watch listened were missed: it starts with a
	// resync of every mailbox.
	if c := next(t, got); c.Mailbox != "" || len(c.Events) != 1 || c.Events[0].Kind != um.EventResync {
		t.Fatalf("Watch() first delivered %+v, want one EventResync for all mailboxes", c)
	}

	if _, err := b.CreateFolder(ctx, "1001", "Own"); err != nil {
		t.Fatal(err)
	}
	m, err := a.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox, CallerNumber: "+4930123"}, strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	c := next(t, got)
	if c.Node != "A" || c.Mailbox != "1001" || len(c.Events) != 1 || c.Events[0].Kind != um.EventAdded {
		t.Fatalf("Watch() delivered %+v, want A's EventAdded (and not B's own CreateFolder)", c)
	}
	if e := c.Events[0].Message; e.ID != m.ID || e.UID != m.UID || e.CallerNumber != "+4930123" || e.Folder != um.Inbox {
		t.Errorf("delivered message = %+v, want %+v", e, m)
	}

	long := strings.Repeat("transcript ", 1000) // over the notification limit
	if _, err := a.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox, Transcript: long}, strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	c = next(t, got)
	if c.Mailbox != "1001" || len(c.Events) != 1 || c.Events[0].Kind != um.EventResync {
		t.Errorf("a change too large to notify was delivered as %+v, want one EventResync", c)
	}
}

func next(t testing.TB, ch <-chan um.Change) um.Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no change delivered within 10s")
		return um.Change{}
	}
}

// waitListening waits until node's notification connection listens: its
// last statement was LISTEN, or the resync listing that follows it.
func waitListening(t testing.TB, dsn, node string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = $1 AND datname = current_database()
			AND (query LIKE 'LISTEN%' OR query LIKE 'SELECT name FROM um_mailboxes%')`, "um-watch/"+node).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s does not listen after 10s", node)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
