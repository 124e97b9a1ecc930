package pgstore_test

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/embeddedum/um/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

// adminDSN reaches the test cluster's postgres database, where each test
// creates a database of its own.
var adminDSN string

// TestMain starts a throwaway PostgreSQL cluster for the package's tests,
// unless UM_PG_DSN names one to use (its user needs CREATEDB). Tests run
// with fsync off to start fast; benchmarks (-test.bench set) run with fsync
// on, so their numbers include durable commits.
func TestMain(m *testing.M) {
	flag.Parse()
	if dsn := os.Getenv("UM_PG_DSN"); dsn != "" {
		adminDSN = dsn
		os.Exit(m.Run())
	}
	bench := flag.Lookup("test.bench").Value.String() != ""
	stop, err := startCluster(!bench)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgstore tests need PostgreSQL (initdb and postgres from the postgresql package, on PATH or in /usr/lib/postgresql/*/bin): %v\n", err)
		os.Exit(1)
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

// startCluster starts the package's throwaway cluster.
func startCluster(noFsync bool) (stop func(), err error) {
	c, err := pgtest.Start(pgtest.Options{NoFsync: noFsync})
	if err != nil {
		return nil, err
	}
	adminDSN = c.DSN
	return c.Stop, nil
}

var dbCounter atomic.Int64

// newDatabase creates an empty database for one test, dropped when the test
// ends, and returns its connection string.
func newDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("um_test_%d_%d", os.Getpid(), dbCounter.Add(1))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		t.Fatalf("connect to test cluster: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, adminDSN)
		if err != nil {
			t.Errorf("connect to drop database: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database: %v", err)
		}
	})
	return withDatabase(t, adminDSN, name)
}

// withDatabase returns dsn pointed at database name; dsn is a URL or a
// keyword/value string.
func withDatabase(t testing.TB, dsn, name string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatalf("parse DSN: %v", err)
		}
		u.Path = "/" + name
		return u.String()
	}
	return dsn + " dbname=" + name
}
