package pgstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/testwait"
	"github.com/embeddedum/um/storage/pgstore"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// TestSilentDepositorHoldsUpNoWriter: node B's link to the database goes
// silent in the middle of a deposit, after the deposit locked the
// mailbox's row and INBOX's UID counter and before it committed. The server
// ends B's transaction once it has waited on B for
// Options.IdleInTransaction, so node A's deposit into the same mailbox goes
// through then, rather than when the server's TCP keepalive gives up on B,
// hours later; and B's deposit, never acknowledged, left nothing behind.
func TestSilentDepositorHoldsUpNoWriter(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	a := openStore(t, dsn, &pgstore.Options{Node: "A"})
	f, viaProxy := muteProxy(t, dsn)
	b := openStore(t, viaProxy, &pgstore.Options{Node: "B", IdleInTransaction: time.Second})
	if err := a.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	// With limits the deposit counts the mailbox under its row, a round
	// trip after taking it, before it inserts the message.
	lim := um.Limits{MaxMessages: 10}
	deposit := func(ctx context.Context, s *pgstore.Store, id uuid.UUID) (um.Message, error) {
		return s.AppendLimited(ctx, "1001", um.Message{ID: id, Folder: um.Inbox}, strings.NewReader("audio"), lim)
	}
	// B's transactions in normal operation are not cut.
	first, err := deposit(ctx, b, uuid.New())
	if err != nil {
		t.Fatalf("B's deposit before the link went silent = %v", err)
	}

	// B's next deposit is held at its INSERT of the message, after it
	// locked both rows and before its last two round trips (the
	// notification and COMMIT), by a transaction of the test's that
	// inserted a message of the same id and has not committed.
	held := pgConnect(t, dsn)
	stall, err := held.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cut := uuid.New()
	if _, err := stall.Exec(ctx, `INSERT INTO um_messages (mailbox_id, id, folder_id, uid, size)
		SELECT f.mailbox_id, $1, f.id, 1000000, 0 FROM um_folders f JOIN um_mailboxes mb ON mb.id = f.mailbox_id
		WHERE mb.name = '1001' AND f.name = $2`, cut, um.Trash); err != nil {
		t.Fatal(err)
	}
	bctx, cancelB := context.WithCancel(ctx)
	defer cancelB()
	bDone := make(chan error, 1)
	go func() {
		_, err := deposit(bctx, b, cut)
		bDone <- err
	}()
	watch := pgConnect(t, dsn)
	testwait.Until(t, 30*time.Second, 5*time.Millisecond, "B's deposit waiting on the test's insert", func() bool {
		var waits bool
		err := watch.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE $1::int = ANY (pg_blocking_pids(pid)))",
			held.PgConn().PID()).Scan(&waits)
		if err != nil {
			t.Fatal(err)
		}
		return waits
	})
	// The link goes silent; then B's INSERT completes, and the server
	// waits on B with both locks held.
	f.Silence()
	if err := stall.Rollback(ctx); err != nil {
		t.Fatal(err)
	}

	// The deadline is a failure guard: without the bound A would wait on
	// B's locks for hours.
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	second, err := deposit(actx, a, uuid.New())
	if err != nil {
		t.Fatalf("A's deposit into the mailbox B went silent in = %v; want it through once the server ended B's transaction", err)
	}
	cancelB()
	select {
	case err := <-bDone:
		if err == nil {
			t.Errorf("B's deposit cut by the silent link succeeded; want an error, since it never committed")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("B's deposit did not return after its context was cancelled")
	}

	list, err := a.List(ctx, "1001", um.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := messageIDs(list), []uuid.UUID{first.ID, second.ID}; !slices.Equal(got, want) {
		t.Errorf("INBOX = %v, want %v: the deposits that were acknowledged, and not B's cut one", got, want)
	}
	var chunks int
	if err := watch.QueryRow(ctx, "SELECT count(*) FROM um_content WHERE message_id = $1", cut).Scan(&chunks); err != nil {
		t.Fatal(err)
	}
	if chunks != 0 {
		t.Errorf("B's cut deposit left %d content chunks, want none", chunks)
	}
	// B's pool drops the dead connection and goes on over a new one,
	// which the proxy passes.
	if _, err := deposit(ctx, b, uuid.New()); err != nil {
		t.Errorf("B's deposit on a new connection = %v", err)
	}
}

// TestStalledAppendIsCut: an append whose content stalls between two
// chunks for longer than Options.IdleInTransaction is rolled back by the
// server. Once the reader goes on the append fails, saying why; nothing of
// it is stored, and the Store goes on serving.
func TestStalledAppendIsCut(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	s := openStore(t, withParam(t, dsn, "application_name", "stalled"), &pgstore.Options{Node: "A", IdleInTransaction: time.Second})
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	// A chunk (256 KiB) goes in, then the reader stops a few bytes into
	// the next, the last.
	r := &stallingReader{data: bytes.Repeat([]byte("a"), 256<<10+10), stallAt: 256<<10 + 5,
		stalled: make(chan struct{}), resume: make(chan struct{})}
	id := uuid.New()
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, "1001", um.Message{ID: id, Folder: um.Inbox}, r)
		done <- err
	}()
	<-r.stalled
	// The append's session sits idle in its transaction, from before the
	// reader stopped, until the server ends it.
	watch := pgConnect(t, dsn)
	testwait.Until(t, 30*time.Second, 5*time.Millisecond, "the server ending the stalled transaction", func() bool {
		var idle int
		err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE application_name = 'stalled' AND state = 'idle in transaction'`).Scan(&idle)
		if err != nil {
			t.Fatal(err)
		}
		return idle == 0
	})
	close(r.resume)
	err := <-done
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "25P03" || !strings.Contains(err.Error(), "Options.IdleInTransaction") {
		t.Fatalf("Append() with content stalled past IdleInTransaction = %v; want the server's idle-in-transaction timeout (25P03), explained", err)
	}
	if _, err := s.Get(ctx, "1001", id); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Get() of the cut append = %v, want um.ErrNotFound", err)
	}
	var chunks int
	if err := watch.QueryRow(ctx, "SELECT count(*) FROM um_content WHERE message_id = $1", id).Scan(&chunks); err != nil {
		t.Fatal(err)
	}
	if chunks != 0 {
		t.Errorf("the cut append left %d content chunks, want none", chunks)
	}
	if _, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, bytes.NewReader(r.data)); err != nil {
		t.Errorf("Append() of the same content without a stall = %v", err)
	}
}

// stallingReader reads data, stopping once, at stallAt, until resume is
// closed; it closes stalled when it stops.
type stallingReader struct {
	data            []byte
	stallAt         int
	stalled, resume chan struct{}
	off             int
	once            bool
}

func (r *stallingReader) Read(p []byte) (int, error) {
	if r.off == r.stallAt && !r.once {
		r.once = true
		close(r.stalled)
		<-r.resume
	}
	if r.off == len(r.data) {
		return 0, io.EOF
	}
	end := len(r.data)
	if r.off < r.stallAt {
		end = r.stallAt
	}
	n := copy(p, r.data[r.off:end])
	r.off += n
	return n, nil
}

func messageIDs(ms []um.Message) []uuid.UUID {
	ids := make([]uuid.UUID, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}

// pgConnect opens a connection of the test's own to dsn.
func pgConnect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// withParam returns dsn, a URL or a keyword/value string, with the
// parameter key set to value.
func withParam(t testing.TB, dsn, key, value string) string {
	t.Helper()
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("parse DSN: %v", err)
		}
		q := u.Query()
		q.Set(key, value)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " " + key + "='" + strings.ReplaceAll(value, "'", `\'`) + "'"
}
