package pgstore

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/embeddedum/um"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

var (
	_ um.Store              = (*Store)(nil)
	_ um.Watcher            = (*Store)(nil)
	_ um.Counter            = (*Store)(nil)
	_ um.Expunger           = (*Store)(nil)
	_ um.ModSeqer           = (*Store)(nil)
	_ um.FolderSubscriber   = (*Store)(nil)
	_ um.ConditionalFlagger = (*Store)(nil)
)

// ErrSchemaTooNew is returned by Open when the database was migrated by a
// newer version of pgstore than this one: its schema may hold data this
// version would misread, so it refuses to touch it.
var ErrSchemaTooNew = errors.New("pgstore: database schema is newer than this version of pgstore")

// Channel is the LISTEN/NOTIFY channel of the change feed. Every Store on a
// database shares it, so one database holds one cluster's mailboxes.
const Channel = "um_changes"

// Options tune a Store. The zero value works.
type Options struct {
	// Node names the cluster node this Store serves; it must equal the
	// um.Options.Node of the Service on top. Changes carry it, so that Watch
	// on the node that made a change does not deliver it back. Default: the
	// node given to the last Watch call (um.New makes that call), else "".
	Node string
	// MaxConns caps the connection pool, not counting the one connection
	// each Watch holds. Default: pgxpool's (the larger of 4 and the number
	// of CPUs).
	MaxConns int32
	// PingInterval is how long Watch waits for a notification before it
	// pings its connection, so that a connection lost without a word (a
	// dead peer, a dropped NAT entry) is noticed. Default 10s.
	PingInterval time.Duration
	// VanishedKept is how many removals each folder remembers for
	// um.ModSeqer.Vanished (IMAP QRESYNC); a client that resynchronizes from
	// before the older ones forgotten is told which UIDs still exist
	// instead. Default 10,000.
	VanishedKept int
	// IdleInTransaction bounds how long the server keeps a transaction of
	// this Store open while it waits on this node: it ends the session of
	// a transaction idle longer (idle_in_transaction_session_timeout, set
	// on every connection), rolling it back and releasing its locks. A
	// node that goes silent in the middle of a transaction (a partition, a
	// frozen VM) so holds up the other nodes' writes that need the same
	// rows for this long at most, rather than until the server's TCP
	// keepalive gives up, hours later. Default 10s: two thirds of the
	// default LeaseTTL of packages upstream and forward (15s), whose
	// holder renews every third of it, so a dead holder's locks are gone
	// by the time its lease can pass. Keep it under two thirds of the
	// shortest lease time to live in use.
	//
	// The store's own statements follow one another in milliseconds; what
	// else a transaction waits on is Append reading its content from the
	// caller (um.Deposit.Audio). A reader that stalls longer than this
	// fails the append, which then stores nothing.
	//
	// A connection string that sets idle_in_transaction_session_timeout
	// itself (as a parameter, or with -c in options) keeps its value. A
	// negative value sets nothing: the server's configuration applies
	// (postgresql.conf, ALTER ROLE, ALTER DATABASE; a value set here
	// overrides those). See the package documentation, "A node gone
	// silent".
	IdleInTransaction time.Duration
	// PeerTimeout bounds how long either end of a connection takes to
	// notice that the other is gone without a word: the server's TCP
	// keepalive (tcp_keepalives_idle, _interval, _count) and
	// tcp_user_timeout are set on every connection, and this node's
	// sockets get the same keepalive and, on Linux, TCP_USER_TIMEOUT.
	// Half of it passes idle before the first probe, the rest on probes.
	// The server so frees the sessions of a node that vanished, and a
	// call on this node whose server or link died fails within about this
	// long even when its context has no deadline. Default 30s; the server
	// must be PostgreSQL 12 or newer (tcp_user_timeout). Each server
	// setting the connection string sets itself keeps its value; a
	// negative value sets nothing, leaving the server's settings and pgx's
	// dialer.
	PeerTimeout time.Duration
	// Logger receives what has no caller to return to: a lost notification
	// connection and a malformed notification (Warn), schema migrations
	// (Info). Nil means Logf when that is set, else nothing is logged.
	Logger *slog.Logger
	// Logf is superseded by Logger; when Logger is nil, each record goes to
	// it as one line.
	Logf func(format string, args ...any)
}

// Store is a um.Store on PostgreSQL, shared by the nodes of a PBX cluster.
// It implements um.Watcher; see the package documentation for the change
// feed. It is safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	opts     Options
	instance string // random, tells this Store's notifications from others'
	log      *slog.Logger

	done   chan struct{} // closed by Close; stops Watch
	closed atomic.Bool

	watchNode atomic.Pointer[string] // node of the last Watch, for Options.Node ""

	mu        sync.Mutex
	mailboxes map[string]int64 // name -> id; mailboxes are never deleted
}

// Open connects to the database connString names (a PostgreSQL URL or
// keyword/value string, as pgx parses it), creates or migrates the schema,
// and returns the Store. It fails with ErrSchemaTooNew when the database was
// migrated by a newer pgstore.
func Open(ctx context.Context, connString string, opts *Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	s := &Store{done: make(chan struct{}), mailboxes: make(map[string]int64)}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.MaxConns > 0 {
		cfg.MaxConns = s.opts.MaxConns
	}
	if s.opts.PingInterval <= 0 {
		s.opts.PingInterval = 10 * time.Second
	}
	s.log = s.opts.logger()
	if s.opts.VanishedKept <= 0 {
		s.opts.VanishedKept = 10000
	}
	if s.opts.IdleInTransaction == 0 {
		s.opts.IdleInTransaction = defaultIdleInTransaction
	}
	if s.opts.PeerTimeout == 0 {
		s.opts.PeerTimeout = defaultPeerTimeout
	}
	s.opts.boundSessions(&cfg.ConnConfig.Config)
	var b [8]byte
	_, _ = rand.Read(b[:])
	s.instance = hex.EncodeToString(b[:])
	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		s.pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the connection pool and stops every Watch. Later calls fail
// with um.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.done)
	s.pool.Close()
	return nil
}

//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]migration, 0, len(names))
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("pgstore: migration %s: bad version: %w", base, err)
		}
		sql, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: base, sql: string(sql)})
	}
	return out, nil
}

// migrateLockKey keys the advisory lock that keeps nodes starting at once
// from migrating the same database twice.
const migrateLockKey = 0x756d5f7067 // "um_pg"

// SchemaVersion is the schema version this pgstore creates and reads.
var SchemaVersion = func() int {
	ms, err := migrations()
	if err != nil || len(ms) == 0 {
		panic(fmt.Sprintf("pgstore: embedded migrations: %v", err))
	}
	return ms[len(ms)-1].version
}()

func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLockKey)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS um_schema_version (
			version    integer PRIMARY KEY,
			name       text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return err
		}
		var cur int
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM um_schema_version").Scan(&cur); err != nil {
			return err
		}
		if cur > SchemaVersion {
			return fmt.Errorf("%w: the database is at version %d, this pgstore knows versions up to %d; upgrade the program", ErrSchemaTooNew, cur, SchemaVersion)
		}
		for _, m := range ms {
			if m.version <= cur {
				continue
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
			if _, err := tx.Exec(ctx, "INSERT INTO um_schema_version (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
				return err
			}
			s.log.Info("pgstore: migrating schema", "from", cur, "to", m.version, "migration", m.name)
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrSchemaTooNew) {
		return fmt.Errorf("pgstore: migrate schema: %w", err)
	}
	return err
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return um.ErrClosed
	}
	return ctx.Err()
}

// inTx runs fn in a transaction and commits. A deadlock or serialization
// failure (possible when two nodes lock the same messages in a different
// order) rolls back and runs fn again, a few times.
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err := pgx.BeginFunc(ctx, s.pool, fn)
		if err == nil || attempt == 4 || !retryable(err) {
			return s.mapErr(err)
		}
	}
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// mapErr turns a closed pool into um.ErrClosed and a unique violation into
// um.ErrExists, and says when the server cut a transaction for idling.
func (s *Store) mapErr(err error) error {
	if err == nil {
		return nil
	}
	err = explainIdle(err)
	if s.closed.Load() && !errors.Is(err, um.ErrClosed) {
		return fmt.Errorf("%w: %v", um.ErrClosed, err)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" && !errors.Is(err, um.ErrExists) {
		return fmt.Errorf("pgstore: %w: %s", um.ErrExists, pe.Message)
	}
	return err
}

// queryer is a pool or a transaction.
type queryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// poolMailboxID is how a call outside a transaction starts: it refuses
// once the store is closed or ctx is done, then returns the id of mailbox.
func (s *Store) poolMailboxID(ctx context.Context, mailbox string) (int64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	mid, err := s.mailboxID(ctx, s.pool, mailbox)
	if err != nil {
		return 0, s.mapErr(err)
	}
	return mid, nil
}

// mailboxID returns the id of mailbox. Mailboxes are never deleted, so ids
// are cached for the Store's life.
func (s *Store) mailboxID(ctx context.Context, q queryer, name string) (int64, error) {
	s.mu.Lock()
	id, ok := s.mailboxes[name]
	s.mu.Unlock()
	if ok {
		return id, nil
	}
	err := q.QueryRow(ctx, "SELECT id FROM um_mailboxes WHERE name = $1", name).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, fmt.Errorf("pgstore: mailbox %q: %w", name, um.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("pgstore: mailbox %q: %w", name, err)
	}
	s.mu.Lock()
	s.mailboxes[name] = id
	s.mu.Unlock()
	return id, nil
}

// node returns the node name changes are published under.
func (s *Store) node() string {
	if s.opts.Node != "" {
		return s.opts.Node
	}
	if p := s.watchNode.Load(); p != nil {
		return *p
	}
	return ""
}
