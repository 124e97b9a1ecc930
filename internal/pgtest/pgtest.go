// Package pgtest starts throwaway PostgreSQL clusters for um's tests and
// benchmarks: initdb and postgres from the machine (PATH or Debian's
// /usr/lib/postgresql/*/bin) in a temporary directory, listening on a free
// port of 127.0.0.1 only, run as the postgres user when the caller is root
// (PostgreSQL refuses to run as root).
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNotInstalled is returned when no PostgreSQL server binaries are found.
var ErrNotInstalled = errors.New("pgtest: PostgreSQL not installed (Debian package postgresql)")

// Options tune a cluster. The zero value runs with fsync on.
type Options struct {
	// NoFsync turns fsync, synchronous commit and full-page writes off:
	// faster start and commits for tests; benchmarks keep them on.
	NoFsync bool
}

// Cluster is a running throwaway PostgreSQL cluster.
type Cluster struct {
	// DSN reaches the postgres database as the superuser postgres.
	DSN string

	dir    string
	pg     *exec.Cmd
	exited chan struct{}
	log    *os.File
}

func findBin() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	return "", ErrNotInstalled
}

// Start runs initdb and postgres and returns once the server accepts
// connections. Call Stop when done.
func Start(opts Options) (_ *Cluster, err error) {
	bin, err := findBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "um-pg-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgtest: running as root and no postgres user to run the server as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgtest: initdb: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	args := []string{"-D", data, "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-k", dir,
		"-c", "max_connections=200", "-c", "shared_buffers=32MB"}
	if opts.NoFsync {
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: dir, log: logf, exited: make(chan struct{}),
		DSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)}
	c.pg = exec.Command(filepath.Join(bin, "postgres"), args...)
	c.pg.Dir = dir
	c.pg.Stdout, c.pg.Stderr = logf, logf
	// Pdeathsig: a test binary killed by its timeout takes the server along.
	c.pg.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := c.pg.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("pgtest: start postgres: %w", err)
	}
	go func() { c.pg.Wait(); close(c.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, cerr := pgx.Connect(ctx, c.DSN)
		cancel()
		if cerr == nil {
			conn.Close(context.Background())
			return c, nil
		}
		select {
		case <-c.exited:
			log := c.Log()
			c.Stop()
			return nil, fmt.Errorf("pgtest: postgres exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			log := c.Log()
			c.Stop()
			return nil, fmt.Errorf("pgtest: postgres did not accept connections within 30s: %v\n%s", cerr, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log returns what the server has logged so far.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "postgres.log"))
	return string(b)
}

// Stop shuts the server down (fast shutdown, killed after 10 s) and removes
// its directory.
func (c *Cluster) Stop() {
	c.pg.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.pg.Process.Kill()
		<-c.exited
	}
	c.log.Close()
	os.RemoveAll(c.dir)
}
