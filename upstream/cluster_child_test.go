package upstream_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/storage/pgstore"
	"github.com/embeddedum/um/upstream"
	"github.com/embeddedum/um/wav"
	"github.com/google/uuid"
)

// childEnv, when set, makes the test binary a cluster node of its own
// (ownerChild) configured by the JSON it holds, instead of running tests.
const childEnv = "UM_UPSTREAM_NODE_CHILD"

// childConfig is what a node child is told.
type childConfig struct {
	DSN, Addr, CertFile, Mailbox, Node string
	// Deposit, when set, makes the child deposit a voicemail every this
	// long once it owns the mailbox.
	Deposit time.Duration
	// DieAfterAppend makes the child SIGKILL itself the moment the server
	// has answered its first APPEND, before it saves the copy's UID.
	DieAfterAppend bool
}

// ownerChild runs one node: a pgstore Store, a Service and an engine
// syncing the mailbox. It prints "owning" once it owns the mailbox,
// "synced" after its first full sync, and "deposited ID" after each of its
// deposits, until it is killed.
func ownerChild() {
	var c childConfig
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "child: %s: %v\n", what, err)
		os.Exit(2)
	}
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &c); err != nil {
		fail("config", err)
	}
	ctx := context.Background()
	st, err := pgstore.Open(ctx, c.DSN, &pgstore.Options{Node: c.Node})
	if err != nil {
		fail("open store", err)
	}
	svc, err := um.New(st, &um.Options{Node: c.Node})
	if err != nil {
		fail("service", err)
	}
	tc, err := rootCAs(c.CertFile)
	if err != nil {
		fail("certificate", err)
	}
	opts := clusterOptions()
	opts.Logger = slog.New(slog.DiscardHandler)
	eng, err := upstream.New(svc, nil, opts)
	if err != nil {
		fail("engine", err)
	}
	if c.DieAfterAppend {
		upstream.SetAfterAppend(eng, func() bool {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		})
	}
	mb, err := svc.EnsureMailbox(ctx, c.Mailbox)
	if err != nil {
		fail("mailbox", err)
	}
	cfg := upstream.Config{Mailbox: c.Mailbox, Addr: c.Addr, Security: upstream.StartTLS, TLSConfig: tc,
		Username: c.Mailbox, Credentials: upstream.Password("pass" + c.Mailbox)}
	if err := eng.Add(ctx, cfg); err != nil {
		fail("add", err)
	}
	for !eng.Status(c.Mailbox).Owning {
		time.Sleep(5 * time.Millisecond)
	}
	fmt.Println("owning") // stdout is unbuffered: the line is out before the next step
	go func() {
		for eng.Status(c.Mailbox).LastSync.IsZero() {
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Println("synced")
	}()
	if c.Deposit == 0 {
		select {}
	}
	for {
		m, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Tone(50 * time.Millisecond)), CallerNumber: "child", Duration: time.Second})
		if err != nil {
			fail("deposit", err)
		}
		fmt.Println("deposited", m.ID)
		time.Sleep(c.Deposit)
	}
}

// child is a node running in a process of its own.
type child struct {
	cmd    *exec.Cmd
	owning chan struct{} // closed when it said it owns the mailbox
	synced chan struct{} // closed when it said it synced it
	exited chan struct{}

	mu        sync.Mutex
	deposited []uuid.UUID
	stderr    bytes.Buffer
}

// startChild starts a node child for the mailbox at d on the database dsn
// and waits until it owns the mailbox.
func startChild(tb testing.TB, d *dovecot.Server, dsn string, c childConfig) *child {
	tb.Helper()
	c.DSN, c.Addr, c.CertFile = dsn, d.Addr, d.CertFile
	if c.Mailbox == "" {
		c.Mailbox = "1001"
	}
	cfg, err := json.Marshal(c)
	if err != nil {
		tb.Fatal(err)
	}
	ch := &child{owning: make(chan struct{}), synced: make(chan struct{}), exited: make(chan struct{})}
	ch.cmd = exec.Command(os.Args[0], "-test.run=^$")
	ch.cmd.Env = append(os.Environ(), childEnv+"="+string(cfg))
	ch.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	ch.cmd.Stderr = &lockedWriter{mu: &ch.mu, w: &ch.stderr}
	out, err := ch.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := ch.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if line == "owning" {
				close(ch.owning)
			} else if line == "synced" {
				close(ch.synced)
			} else if s, ok := strings.CutPrefix(line, "deposited "); ok {
				if id, err := uuid.Parse(s); err == nil {
					ch.mu.Lock()
					ch.deposited = append(ch.deposited, id)
					ch.mu.Unlock()
				}
			}
		}
		ch.cmd.Wait()
		close(ch.exited)
	}()
	tb.Cleanup(ch.kill)
	select {
	case <-ch.owning:
	case <-ch.exited:
		tb.Fatalf("node child exited before it owned the mailbox: %s", ch.errors())
	case <-time.After(30 * time.Second):
		ch.kill()
		tb.Fatalf("node child did not own the mailbox within 30s: %s", ch.errors())
	}
	return ch
}

// kill ends the child with SIGKILL, as a crash would, and waits for it.
func (ch *child) kill() {
	ch.cmd.Process.Signal(syscall.SIGKILL)
	<-ch.exited
}

func (ch *child) errors() string {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.stderr.String()
}

// acked returns the IDs of the deposits the child saw succeed.
func (ch *child) acked() []uuid.UUID {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return append([]uuid.UUID(nil), ch.deposited...)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
