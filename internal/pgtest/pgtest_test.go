package pgtest_test

import (
	"context"
	"net"
	"strconv"
	"testing"

	"github.com/embeddedum/um/internal/pgtest"
	"github.com/jackc/pgx/v5"
)

func TestStartStop(t *testing.T) {
	c, err := pgtest.Start(pgtest.Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.DSN)
	if err != nil {
		c.Stop()
		t.Fatal(err)
	}
	var fsync string
	if err := conn.QueryRow(ctx, "SHOW fsync").Scan(&fsync); err != nil || fsync != "off" {
		t.Errorf("SHOW fsync = %q, %v; want off", fsync, err)
	}
	conn.Close(ctx)
	cfg, _ := pgx.ParseConfig(c.DSN)
	c.Stop()
	if cfg.Host != "127.0.0.1" {
		t.Errorf("server on %q, want loopback only", cfg.Host)
	}
	if conn, err := net.Dial("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))); err == nil {
		conn.Close()
		t.Errorf("port still open after Stop")
	}
}
