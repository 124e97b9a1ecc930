package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/jackc/pgx/v5"
)

// startPostgres runs a throwaway PostgreSQL (initdb and postgres from the
// Debian package postgresql) in a temporary directory on a free port, as
// the postgres user when the test runs as root, and returns its DSN.
func startPostgres(t testing.TB) string {
	t.Helper()
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	var bin string
	for i := len(dirs) - 1; i >= 0 && bin == ""; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			bin = dirs[i]
		}
	}
	if bin == "" {
		t.Fatal("no /usr/lib/postgresql/*/bin/initdb: install the Debian package postgresql")
	}
	dir, err := os.MkdirTemp("", "pbx-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := osuser.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root and no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.Dir = dir
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := freeAddr(t)
	_, portNum, _ := net.SplitHostPort(port)
	pg := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-h", "127.0.0.1", "-p", portNum, "-k", dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off")
	pg.Dir = dir
	log := new(lockedBuffer)
	pg.Stdout, pg.Stderr = log, log
	pg.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := pg.Start(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	exited := make(chan struct{})
	go func() { pg.Wait(); close(exited) }()
	t.Cleanup(func() {
		pg.Process.Signal(syscall.SIGINT) // fast shutdown
		select {
		case <-exited:
		case <-time.After(wait):
			pg.Process.Kill()
			<-exited
		}
	})
	dsn := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", port)
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, dsn)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return dsn
		}
		select {
		case <-exited:
			t.Fatalf("postgres exited:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres did not accept connections within %v: %v\n%s", wait, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
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
	// The node where a change is made announces the lamp.
	b.expect("MWI 1001 off 0/1 (0/0)")
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
