package upstream_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/internal/muteproxy"
	"github.com/embeddedum/um/internal/pgtest"
	"github.com/embeddedum/um/storage/pgstore"
	"github.com/embeddedum/um/upstream"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// clusterTTL is the lease time to live of the cluster tests: short, so a
// takeover comes soon, and long enough for a loaded machine to renew.
const clusterTTL = 2 * time.Second

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		ownerChild()
		os.Exit(0)
	}
	code := m.Run()
	if pg != nil {
		pg.Stop()
	}
	os.Exit(code)
}

var (
	pgOnce sync.Once
	pg     *pgtest.Cluster
	pgErr  error
	dbSeq  atomic.Int64
)

// newDatabase returns the connection string of an empty database of its
// own on the package's throwaway PostgreSQL (started at first use,
// stopped by TestMain), dropped when the test ends. A machine without
// PostgreSQL fails the test.
func newDatabase(tb testing.TB) string {
	tb.Helper()
	pgOnce.Do(func() { pg, pgErr = pgtest.Start(pgtest.Options{NoFsync: true}) })
	if pgErr != nil {
		tb.Fatalf("the cluster tests need PostgreSQL (Debian package postgresql): %v", pgErr)
	}
	name := fmt.Sprintf("um_upstream_%d_%d", os.Getpid(), dbSeq.Add(1))
	ctx := context.Background()
	exec := func(sql string) error {
		conn, err := pgx.Connect(ctx, pg.DSN)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := exec("CREATE DATABASE " + name); err != nil {
		tb.Fatalf("create database: %v", err)
	}
	tb.Cleanup(func() {
		if err := exec("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
			tb.Errorf("drop database: %v", err)
		}
	})
	u, err := url.Parse(pg.DSN)
	if err != nil {
		tb.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// node is one PBX of a cluster: its own pgstore Store on the shared
// database, its own um.Service and its own sync engine.
type node struct {
	name  string
	store *pgstore.Store
	svc   *um.Service
	eng   *upstream.Engine
}

// newNode starts node name on the database dsn.
func newNode(tb testing.TB, dsn, name string) *node {
	tb.Helper()
	ctx := context.Background()
	st, err := pgstore.Open(ctx, dsn, &pgstore.Options{Node: name, PingInterval: time.Second})
	if err != nil {
		tb.Fatalf("pgstore.Open() = %v", err)
	}
	svc, err := um.New(st, &um.Options{Node: name})
	if err != nil {
		tb.Fatal(err)
	}
	eng, err := upstream.New(svc, nil, clusterOptions())
	if err != nil {
		tb.Fatalf("upstream.New() = %v", err)
	}
	n := &node{name: name, store: st, svc: svc, eng: eng}
	tb.Cleanup(func() {
		eng.Close()
		svc.Close()
		st.Close()
	})
	return n
}

func clusterOptions() *upstream.Options {
	o := testOptions
	o.LeaseTTL = clusterTTL
	return &o
}

// dovecotConfig is the sync account of mailbox at d.
func dovecotConfig(d *dovecot.Server, mailbox string) upstream.Config {
	return upstream.Config{
		Mailbox:     mailbox,
		Addr:        d.Addr,
		Security:    upstream.StartTLS,
		TLSConfig:   d.TLSConfig(),
		Username:    mailbox,
		Credentials: upstream.Password("pass" + mailbox),
	}
}

// add starts syncing mailbox on n.
func (n *node) add(tb testing.TB, d *dovecot.Server, mailbox string) {
	tb.Helper()
	if _, err := n.svc.EnsureMailbox(context.Background(), mailbox); err != nil {
		tb.Fatal(err)
	}
	if err := n.eng.Add(context.Background(), dovecotConfig(d, mailbox)); err != nil {
		tb.Fatalf("Add() on %s = %v", n.name, err)
	}
}

// owner waits until exactly one of nodes owns mailbox and every other
// node names it as the owner, and returns it.
func owner(tb testing.TB, mailbox string, nodes ...*node) *node {
	tb.Helper()
	var own *node
	eventuallyShow(tb, "one owner that every node names", func() bool {
		own = nil
		for _, n := range nodes {
			if n.eng.Status(mailbox).Owning {
				if own != nil {
					return false
				}
				own = n
			}
		}
		if own == nil {
			return false
		}
		for _, n := range nodes {
			if n.eng.Status(mailbox).Owner != own.name {
				return false
			}
		}
		return true
	}, clusterView(mailbox, nodes...))
	return own
}

// clusterView returns a report, for a failed wait, of what nodes say of
// mailbox's ownership, and of the database sessions that hold a
// transaction open or wait: a lock that a cut node's transaction holds
// can keep the others from taking the lease.
func clusterView(mailbox string, nodes ...*node) func() string {
	return func() string {
		var b strings.Builder
		b.WriteString("the nodes' Status:")
		for _, n := range nodes {
			st := n.eng.Status(mailbox)
			fmt.Fprintf(&b, "\n\t%s: Owner %q, Owning %v, Connected %v, Failures %d, LastError %v", n.name, st.Owner, st.Owning, st.Connected, st.Failures, st.LastError)
		}
		b.WriteString("\nthe database sessions not idle:")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, pg.DSN)
		if err != nil {
			fmt.Fprintf(&b, " %v", err)
			return b.String()
		}
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, `SELECT pid, datname, state, coalesce(wait_event_type || '/' || wait_event, ''),
			pg_blocking_pids(pid)::text, to_char(extract(epoch FROM now() - state_change), 'FM990.0'), left(query, 100)
			FROM pg_stat_activity WHERE datname LIKE 'um_upstream_%' AND state <> 'idle' AND pid <> pg_backend_pid()`)
		if err != nil {
			fmt.Fprintf(&b, " %v", err)
			return b.String()
		}
		defer rows.Close()
		for rows.Next() {
			var pid int32
			var db, state, wait, blockers, secs, query string
			if err := rows.Scan(&pid, &db, &state, &wait, &blockers, &secs, &query); err != nil {
				fmt.Fprintf(&b, " %v", err)
				break
			}
			fmt.Fprintf(&b, "\n\tpid %d (%s): %s for %s s, waiting on %q, blocked by %s: %q", pid, db, state, secs, wait, blockers, query)
		}
		return b.String()
	}
}

// syncOn waits until a full sync of mailbox succeeded on whichever of
// nodes owns it.
func syncOn(tb testing.TB, mailbox string, nodes ...*node) {
	tb.Helper()
	var last error
	eventually(tb, "a full sync on the owner", func() bool {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			last = n.eng.Sync(ctx, mailbox)
			cancel()
			if last == nil {
				return true
			}
		}
		return false
	})
}

// copiesByID counts the messages of folder by their X-Um-Message-Id.
func (mc *mailClient) copiesByID(folder string) map[uuid.UUID]int {
	mc.tb.Helper()
	mc.sel(folder)
	sd, err := mc.c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
	if err != nil {
		mc.tb.Fatal(err)
	}
	out := make(map[uuid.UUID]int)
	uids := sd.AllUIDs()
	if len(uids) == 0 {
		return out
	}
	section := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{upstream.IDHeader}, Peek: true}
	bufs, err := mc.c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		mc.tb.Fatal(err)
	}
	for _, b := range bufs {
		id, ok := upstream.ParseIDHeader(b.FindBodySection(section))
		if !ok {
			mc.tb.Fatalf("message %d of %s has no %s", b.UID, folder, upstream.IDHeader)
		}
		out[id]++
	}
	return out
}

// appends tells how many messages were ever put into folder: UIDs are
// given out once each, from 1, so even a copy appended and then removed
// again counts.
func (mc *mailClient) appends(folder string) int {
	mc.tb.Helper()
	sd, err := mc.c.Status(folder, &imap.StatusOptions{UIDNext: true}).Wait()
	if err != nil {
		mc.tb.Fatal(err)
	}
	return int(sd.UIDNext) - 1
}

// exactlyOnce checks that folder holds one copy of each of ids and
// nothing else, and returns what is wrong.
func exactlyOnce(got map[uuid.UUID]int, ids []uuid.UUID) error {
	want := make(map[uuid.UUID]bool, len(ids))
	for _, id := range ids {
		want[id] = true
		if got[id] != 1 {
			return fmt.Errorf("copies of %s = %d, want 1", id, got[id])
		}
	}
	for id, n := range got {
		if !want[id] {
			return fmt.Errorf("%d copies of %s, which the mailbox does not hold", n, id)
		}
	}
	return nil
}

// inboxIDs lists the voicemail in mailbox's INBOX as n's store has it.
func (n *node) inboxIDs(tb testing.TB, mailbox string) []uuid.UUID {
	tb.Helper()
	mb, err := n.svc.Mailbox(context.Background(), mailbox)
	if err != nil {
		tb.Fatal(err)
	}
	msgs, err := mb.List(context.Background(), um.Inbox)
	if err != nil {
		tb.Fatal(err)
	}
	ids := make([]uuid.UUID, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// rootCAs reads the certificate Dovecot presents, for a child process.
func rootCAs(certFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", certFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}, nil
}

// pgProxy is a TCP proxy to PostgreSQL that cuts the connections of one
// node: closed (as a crashed peer's kernel would) or silent (a dead link:
// nothing passes, nothing is closed), refusing new ones, until restored.
type pgProxy struct {
	*muteproxy.Proxy
}

func newPGProxy(tb testing.TB, dsn string) (*pgProxy, string) {
	tb.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	px, err := muteproxy.Start(u.Host)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { px.Close() })
	u.Host = px.Addr
	return &pgProxy{px}, u.String()
}

// cutOff ends the node's reach to the database: silent leaves its
// connections open and mute, otherwise they are closed; new connections
// are refused either way.
func (p *pgProxy) cutOff(silent bool) {
	p.Refuse(true)
	p.Silence()
	if !silent {
		p.CloseConns()
	}
}

// restore lets new connections through again, and closes the muted ones
// (as a link that comes back finds its peers gone).
func (p *pgProxy) restore() {
	p.CloseConns()
	p.Refuse(false)
}
