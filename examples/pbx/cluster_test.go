package main

import (
	"context"
	"testing"
	"time"

	"github.com/embeddedum/um/internal/pgtest"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/jackc/pgx/v5"
)

// startPostgres runs a throwaway PostgreSQL on 127.0.0.1 for one test and
// returns its DSN.
func startPostgres(t testing.TB) string {
	t.Helper()
	c, err := pgtest.Start(pgtest.Options{NoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c.DSN
}

// TestCluster runs two PBX nodes on one PostgreSQL database: a deposit on
// node A reaches a mail client of node B at once, and what that client does
// shows on A's phone.
func TestCluster(t *testing.T) {
	dsn := startPostgres(t)
	bin := buildPBX(t)
	users := []string{"-user", "1001:secret1", "-pg", dsn}
	a := startPBX(t, bin, t.TempDir(), append(users, "-node", "a")...)
	bDir := t.TempDir()
	b := startPBX(t, bin, bDir, append(users, "-node", "b")...)

	waitListening(t, dsn, "a", "b")

	exists := make(chan uint32, 10)
	c, err := imapclient.DialStartTLS(b.imap, &imapclient.Options{
		TLSConfig: tlsConfig(t, bDir),
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					exists <- *d.NumMessages
				}
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("1001", "secret1").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	a.send("deposit 1001 5551234")
	a.expect("MWI 1001 on 1/0 (0/0)", "ok 1")
	// Every node's lamp follows every change: the phone of 1001 may be
	// subscribed on either node.
	b.expect("MWI 1001 on 1/0 (0/0)")
	select {
	case n := <-exists:
		if n != 1 {
			t.Fatalf("EXISTS %d on node b, want 1", n)
		}
	case <-time.After(wait):
		t.Fatalf("no EXISTS on node b within %v of the deposit on node a; stderr of b:\n%s", wait, b.stderr)
	}
	idle.Close()
	if err := idle.Wait(); err != nil {
		t.Fatal(err)
	}
	store := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}
	if err := c.Store(imap.UIDSetNum(1), store, nil).Close(); err != nil {
		t.Fatal(err)
	}
	b.expect("MWI 1001 off 0/1 (0/0)")
	a.expect("MWI 1001 off 0/1 (0/0)")
	a.send("list 1001")
	a.expect("ok 1", "1 heard 5551234 3s")
	a.send("mwi 1001")
	a.expect("ok 0/1 (0/0)")

	c.Logout().Wait()
	for _, p := range []*pbxProc{a, b} {
		p.stdin.Close()
		p.waitExit()
	}
}

// waitListening waits until the change feed of each node has its LISTEN in
// place. um.New starts the feed in the background, so a change made on
// another node in a PBX's first moments would otherwise reach only the
// sessions that load the mailbox afterwards.
func waitListening(t testing.TB, dsn string, nodes ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(wait)
	for _, node := range nodes {
		for {
			var n int
			err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
				WHERE application_name = $1 AND query ILIKE 'LISTEN%'`, "um-watch/"+node).Scan(&n)
			if err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s not listening for changes within %v", node, wait)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
