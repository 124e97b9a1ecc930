package forward_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/forward"
	"github.com/embeddedum/um/internal/pgtest"
	"github.com/embeddedum/um/internal/testwait"
	"github.com/embeddedum/um/internal/wanproxy"
	"github.com/embeddedum/um/storage/pgstore"
	"github.com/embeddedum/um/upstream"
	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"
)

// childEnv, when set, makes the test binary a forwarding node (see
// TestMain and runChild) instead of running tests. It holds a childConfig
// as JSON.
const childEnv = "FORWARD_TEST_CHILD"

// childConfig is what a child node needs: the database, the SMTP server
// and its CA, and its node name.
type childConfig struct {
	DSN, Addr, Node string
	CA              []byte
}

// clusterTTL is the forwarding lease's time to live in the cluster tests:
// how long the other nodes wait for a dead owner's lease to run out.
const clusterTTL = 2 * time.Second

var (
	pgOnce    sync.Once
	pgCluster *pgtest.Cluster
	pgErr     error
	dbCounter atomic.Int64
)

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childEnv); cfg != "" {
		runChild(cfg)
		os.Exit(0)
	}
	flag.Parse()
	code := m.Run()
	if pgCluster != nil {
		pgCluster.Stop()
	}
	os.Exit(code)
}

// newDatabase starts the package's throwaway PostgreSQL cluster on first
// use and returns the connection string of a database of the test's own.
func newDatabase(tb testing.TB) string {
	tb.Helper()
	pgOnce.Do(func() { pgCluster, pgErr = pgtest.Start(pgtest.Options{NoFsync: true}) })
	if pgErr != nil {
		tb.Fatalf("the cluster tests need PostgreSQL (Debian package postgresql): %v", pgErr)
	}
	name := fmt.Sprintf("forward_test_%d_%d", os.Getpid(), dbCounter.Add(1))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgCluster.DSN)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn, err := pgx.Connect(ctx, pgCluster.DSN)
		if err != nil {
			tb.Errorf("drop database: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database: %v", err)
		}
	})
	return strings.Replace(pgCluster.DSN, "/postgres?", "/"+name+"?", 1)
}

// node is one PBX of a cluster: its own store connection, Service and
// Forwarder.
type node struct {
	name  string
	store *pgstore.Store
	svc   *um.Service
	fw    *forward.Forwarder
}

// openNode starts node name on the database dsn, forwarding through the
// SMTP server at addr. Close it with close (also run at the test's end).
func openNode(dsn, name, addr string, roots *x509.CertPool, logger *slog.Logger) (*node, error) {
	ctx := context.Background()
	store, err := pgstore.Open(ctx, dsn, &pgstore.Options{Node: name})
	if err != nil {
		return nil, err
	}
	svc, err := um.New(store, &um.Options{Node: name, Logger: logger})
	if err != nil {
		store.Close()
		return nil, err
	}
	fw, err := forward.New(svc, forward.Options{
		Addr: addr, TLSConfig: &tls.Config{RootCAs: roots},
		Username: "pbx", Password: "secret", From: "voicemail@pbx.example.com",
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		MaxAttempts: 1 << 20, LeaseTTL: clusterTTL, Logger: logger, LocalName: name,
	})
	if err != nil {
		svc.Close()
		store.Close()
		return nil, err
	}
	return &node{name: name, store: store, svc: svc, fw: fw}, nil
}

func (n *node) close() {
	n.fw.Close()
	n.svc.Close()
	n.store.Close()
}

func startNode(tb testing.TB, dsn, name string, s *smtpServer) *node {
	tb.Helper()
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("FORWARD_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", name)
	}
	n, err := openNode(dsn, name, s.Addr, s.Roots, logger)
	if err != nil {
		tb.Fatal(err)
	}
	var once sync.Once
	tb.Cleanup(func() { once.Do(n.close) })
	return n
}

// mailbox returns the node's handle on 1001, creating it on first use.
func (n *node) mailbox(tb testing.TB) *um.Mailbox {
	tb.Helper()
	mb, err := n.svc.EnsureMailbox(context.Background(), "1001")
	if err != nil {
		tb.Fatal(err)
	}
	return mb
}

func (n *node) add(tb testing.TB) {
	tb.Helper()
	if err := n.fw.Add(context.Background(), forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		tb.Fatalf("node %s: Add() = %v", n.name, err)
	}
}

// counts returns how many times the SMTP server accepted each ID.
func counts(ids []string) map[string]int {
	c := make(map[string]int)
	for _, id := range ids {
		c[id]++
	}
	return c
}

// wantEach checks that every message in want was accepted exactly once,
// except those in twice, accepted exactly twice, and nothing else was.
func wantEach(tb testing.TB, got []string, want []um.Message, twice map[string]bool) {
	tb.Helper()
	defer func() {
		if tb.Failed() {
			tb.Logf("accepted, in order: %v", got)
		}
	}()
	c := counts(got)
	for _, m := range want {
		n := 1
		if twice[m.ID.String()] {
			n = 2
		}
		if c[m.ID.String()] != n {
			tb.Errorf("voicemail %s (caller %s) accepted %d times, want %d", m.ID, m.CallerNumber, c[m.ID.String()], n)
		}
		delete(c, m.ID.String())
	}
	for id, n := range c {
		tb.Errorf("accepted %d times a message that was not deposited for forwarding: %s", n, id)
	}
}

// owner waits until the nodes agree on one owner of 1001's forwarding and
// returns it.
func owner(tb testing.TB, nodes ...*node) *node {
	tb.Helper()
	var own *node
	testwait.Until(tb, 20*time.Second, 10*time.Millisecond, "one owner all nodes agree on", func() bool {
		own = nil
		holder := ""
		for i, n := range nodes {
			st := n.fw.Status("1001")
			if i == 0 {
				holder = st.Owner
			}
			if st.Owner == "" || st.Owner != holder {
				return false
			}
			if st.Owned {
				if own != nil {
					return false
				}
				own = n
			}
		}
		return own != nil
	})
	return own
}

// ownerIs waits until every one of nodes sees holder own 1001's
// forwarding, and none of them owns it.
func ownerIs(tb testing.TB, holder string, nodes ...*node) {
	tb.Helper()
	testwait.Until(tb, 20*time.Second, 10*time.Millisecond, "every node to see "+holder+" own the forwarding", func() bool {
		for _, n := range nodes {
			if st := n.fw.Status("1001"); st.Owner != holder || st.Owned {
				return false
			}
		}
		return true
	})
}

// TestClusterForwardsEachDepositOnce: forwarding configured for one mailbox
// on three nodes of one database sends each voicemail once, whichever node
// it was deposited on; one node owns the work and every node's Status
// names it.
func TestClusterForwardsEachDepositOnce(t *testing.T) {
	dsn := newDatabase(t)
	srv := startSMTP(t)
	nodes := []*node{startNode(t, dsn, "a", srv), startNode(t, dsn, "b", srv), startNode(t, dsn, "c", srv)}
	nodes[0].mailbox(t)
	for _, n := range nodes {
		n.add(t)
	}
	own := owner(t, nodes...)

	var mu sync.Mutex
	var want []um.Message
	var wg sync.WaitGroup
	for _, n := range nodes {
		mb := n.mailbox(t)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				m, err := mb.Deposit(context.Background(), um.Deposit{Audio: bytes.NewReader(wav()), CallerNumber: fmt.Sprintf("%s-%d", n.name, i), Duration: 2 * time.Second})
				if err != nil {
					t.Errorf("deposit on %s: %v", n.name, err)
					return
				}
				mu.Lock()
				want = append(want, m)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// The sentinel has the highest UID: once it is out, all is.
	sentinel := (&fixture{smtp: srv}).waitFor(t, nodes[1].mailbox(t))
	want = append(want, sentinel)
	wantEach(t, srv.ids(t), want, nil)
	testwait.Until(t, 10*time.Second, 10*time.Millisecond, "the owner's Status counts every message", func() bool {
		return own.fw.Status("1001").Sent == len(want)
	})
	for _, n := range nodes {
		if n != own && n.fw.Status("1001").Sent != 0 {
			t.Errorf("node %s, not the owner, sent %d messages", n.name, n.fw.Status("1001").Sent)
		}
	}
}

// runChild is a node in a process of its own, for the tests that kill the
// owner: it forwards 1001, prints "owner" once it holds the lease, and
// runs until it is killed.
func runChild(raw string) {
	var cfg childConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(cfg.CA)
	n, err := openNode(cfg.DSN, cfg.Node, cfg.Addr, roots, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	if err := n.fw.Add(context.Background(), forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	for !n.fw.Status("1001").Owned {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Println("owner")
	select {}
}

// child is the owner node running in a process of its own.
type child struct {
	cmd    *exec.Cmd
	exited chan struct{}
	killed atomic.Bool
}

// childOwnsForwarding starts nodes b and c in this process and node a as a
// child process on one database and SMTP server, with mailbox 1001
// forwarded on all three, and waits until a, the first, owns the work.
func childOwnsForwarding(t testing.TB) (srv *smtpServer, a *child, b, c *node) {
	t.Helper()
	dsn := newDatabase(t)
	srv = startSMTP(t)
	b, c = startNode(t, dsn, "b", srv), startNode(t, dsn, "c", srv)
	b.mailbox(t)
	a = startChild(t, dsn, "a", srv)
	b.add(t)
	c.add(t)
	ownerIs(t, "a", b, c)
	return srv, a, b, c
}

// startChild starts node name in a child process and returns once it owns
// 1001's forwarding.
func startChild(t testing.TB, dsn, name string, s *smtpServer) *child {
	t.Helper()
	cfg, _ := json.Marshal(childConfig{DSN: dsn, Addr: s.Addr, Node: name, CA: s.CertPEM})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(cfg))
	logs := new(testwait.Buffer)
	cmd.Stderr = logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, exited: make(chan struct{})}
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ready <- sc.Scan() && sc.Text() == "owner"
		io.Copy(io.Discard, out)
		cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			t.Logf("child %s's log:\n%s", name, logs.String())
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			c.kill()
			t.Fatalf("child %s did not become the owner:\n%s", name, logs.String())
		}
	case <-time.After(30 * time.Second):
		c.kill()
		t.Fatalf("child %s did not become the owner within 30s:\n%s", name, logs.String())
	}
	return c
}

// kill ends the child with SIGKILL, as a crash would, and waits for it.
func (c *child) kill() {
	if c.killed.Swap(true) {
		<-c.exited
		return
	}
	c.cmd.Process.Kill()
	<-c.exited
}

// burst deposits n voicemails into 1001, alternating between the nodes, a
// few milliseconds apart, and returns them.
func burst(tb testing.TB, n int, nodes ...*node) []um.Message {
	tb.Helper()
	var out []um.Message
	for i := range n {
		nd := nodes[i%len(nodes)]
		out = append(out, (&fixture{}).deposit(tb, nd.mailbox(tb), fmt.Sprintf("burst-%d-%s", i, nd.name)))
		time.Sleep(15 * time.Millisecond)
	}
	return out
}

// TestClusterOwnerKilledDuringBurst: the owner of a mailbox's forwarding
// is killed with SIGKILL while a burst of deposits comes in on the other
// nodes, just as it starts submitting the sixth message. Once its lease
// has run out another node takes the work over and forwards every
// remaining deposit, each exactly once: the cut-off submission had not
// ended its data, so nothing was in doubt, and nothing is lost.
func TestClusterOwnerKilledDuringBurst(t *testing.T) {
	srv, a, b, c := childOwnsForwarding(t)
	srv.OnMail(func(n int) error {
		if n == 6 {
			a.kill()
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "gone"}
		}
		return nil
	})

	want := burst(t, 20, b, c)
	if !a.killed.Load() {
		t.Fatalf("the owner was not killed during the burst; the test proves nothing")
	}
	want = append(want, (&fixture{smtp: srv}).waitFor(t, c.mailbox(t)))
	wantEach(t, srv.ids(t), want, nil)
	own := owner(t, b, c)
	if st := own.fw.Status("1001"); st.Resent != 0 {
		t.Errorf("new owner %s: Status().Resent = %d, want 0: nothing was in doubt", own.name, st.Resent)
	}
}

// TestClusterOwnerKilledAtRandom: the owner is killed at a random moment
// of a burst, whatever it was doing. Every deposit is forwarded; at most
// one is forwarded twice, the one the state held in doubt, and then the
// new owner's Status counts it in Resent.
func TestClusterOwnerKilledAtRandom(t *testing.T) {
	for trial := range 2 {
		srv, a, b, c := childOwnsForwarding(t)
		delay := time.Duration(rand.N(250)) * time.Millisecond
		time.AfterFunc(delay, a.kill)
		want := burst(t, 20, b, c)
		want = append(want, (&fixture{smtp: srv}).waitFor(t, c.mailbox(t)))
		twice := map[string]bool{}
		for id, n := range counts(srv.ids(t)) {
			if n > 1 {
				twice[id] = true
			}
		}
		wantEach(t, srv.ids(t), want, twice)
		own := owner(t, b, c)
		resent := own.fw.Status("1001").Resent
		if len(twice) > 1 || resent > 1 || (len(twice) == 1 && resent != 1) {
			t.Errorf("trial %d, killed after %v: %d messages forwarded twice, new owner's Resent %d; want at most the one in doubt, and Resent counting it", trial, delay, len(twice), resent)
		}
		t.Logf("trial %d: killed %v into the burst; %d of %d forwarded twice", trial, delay, len(twice), len(want))
	}
}

// TestClusterOwnerCutFromDatabase: the owner loses its PostgreSQL
// connection for good (the network to the database fails; its process
// lives on). It stops forwarding before its lease can pass on, another
// node takes the work over, and every voicemail deposited meanwhile goes
// out exactly once: the cut-off node sends nothing it cannot record.
func TestClusterOwnerCutFromDatabase(t *testing.T) {
	dsn := newDatabase(t)
	srv := startSMTP(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := wanproxy.Start(u.Host, wanproxy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	u.Host = proxy.Addr
	a := startNode(t, u.String(), "a", srv)
	a.mailbox(t)
	a.add(t)
	testwait.Until(t, 20*time.Second, 10*time.Millisecond, "a to own 1001", func() bool { return a.fw.Status("1001").Owned })
	b, c := startNode(t, dsn, "b", srv), startNode(t, dsn, "c", srv)
	b.add(t)
	c.add(t)
	ownerIs(t, "a", b, c)
	want := burst(t, 3, b, c)
	sentinel := (&fixture{smtp: srv}).waitFor(t, b.mailbox(t))
	want = append(want, sentinel)
	// The server records a message before a has its answer: cut a off
	// only once its state says the sentinel was sent, or the sentinel is
	// in doubt (and sent again, as it should be).
	testwait.Until(t, 10*time.Second, 10*time.Millisecond, "the sentinel recorded as sent", func() bool {
		data, err := b.store.GetState(context.Background(), "1001", forward.Purpose)
		var st struct {
			UID     um.UID
			Sending any
		}
		return err == nil && json.Unmarshal(data, &st) == nil && st.UID >= sentinel.UID && st.Sending == nil
	})
	sentByA := a.fw.Status("1001").Sent

	proxy.Close() // a's connections cut, and no new one gets through
	want = append(want, burst(t, 6, b, c)...)
	want = append(want, (&fixture{smtp: srv}).waitFor(t, c.mailbox(t)))
	wantEach(t, srv.ids(t), want, nil)
	if t.Failed() {
		for _, m := range srv.Messages() {
			_, rest, _ := strings.Cut(string(m.Data), "X-Um-Message-Id: ")
			t.Logf("accepted %.8s from %s", rest, m.Helo)
		}
	}
	own := owner(t, b, c)
	testwait.Until(t, 20*time.Second, 10*time.Millisecond, "a to know it lost the lease", func() bool { return !a.fw.Status("1001").Owned })
	if got := a.fw.Status("1001").Sent; got != sentByA {
		t.Errorf("node a sent %d messages after it was cut from the database", got-sentByA)
	}
	if own.fw.Status("1001").Resent != 0 {
		t.Errorf("new owner %s resent a message, but nothing was in doubt", own.name)
	}
}

// TestClusterMessageInDoubtResentWithSameMessageID: the owner dies after
// the SMTP server took the end of a message's data and before the server's
// answer reached it. Nobody can know whether the server kept it, so the
// next owner sends it again, and only it: byte for byte the same e-mail,
// with the same Message-ID, for the receiver to recognise. Its Status
// counts it in Resent.
func TestClusterMessageInDoubtResentWithSameMessageID(t *testing.T) {
	srv, a, b, c := childOwnsForwarding(t)
	srv.OnData(func(n int) {
		if n == 3 {
			a.kill() // the server keeps the message; its answer is lost
		}
	})

	want := burst(t, 8, b, c)
	want = append(want, (&fixture{smtp: srv}).waitFor(t, b.mailbox(t)))
	if !a.killed.Load() {
		t.Fatalf("the owner was not killed; the test proves nothing")
	}
	got := srv.Messages()
	doubt := srv.ids(t)[2]
	wantEach(t, srv.ids(t), want, map[string]bool{doubt: true})
	var copies [][]byte
	for i, id := range srv.ids(t) {
		if id == doubt {
			copies = append(copies, got[i].Data)
		}
	}
	if len(copies) == 2 && !bytes.Equal(copies[0], copies[1]) {
		t.Errorf("the message sent again differs from the first copy")
	}
	if !bytes.Contains(copies[0], []byte("Message-ID: <")) {
		t.Errorf("the message in doubt has no Message-ID for the receiver to drop the copy by")
	}
	own := owner(t, b, c)
	if st := own.fw.Status("1001"); st.Resent != 1 {
		t.Errorf("new owner %s: Status().Resent = %d, want 1", own.name, st.Resent)
	}
}

// TestClusterModeConflictAcrossNodesAndRestarts: a mailbox forwarded on
// node a cannot be synced upstream on node b, and a mailbox synced on b
// cannot be forwarded on a; the errors wrap um.ErrModeConflict and name
// the mode that holds. The forwarding claim survives restarting both
// nodes: closing a Forwarder does not release it, only Remove does.
func TestClusterModeConflictAcrossNodesAndRestarts(t *testing.T) {
	dsn := newDatabase(t)
	srv := startSMTP(t)
	ctx := context.Background()
	imapCfg := func(mb string) upstream.Config {
		// Never reached: the claim is checked before any connection.
		return upstream.Config{Mailbox: mb, Addr: "127.0.0.1:1", Username: mb, Credentials: upstream.Password("x")}
	}
	engine := func(n *node) *upstream.Engine {
		e, err := upstream.New(n.svc, mustFileState(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	wantConflict := func(what string, err error, held string) {
		t.Helper()
		if !errors.Is(err, um.ErrModeConflict) || !strings.Contains(err.Error(), held) {
			t.Errorf("%s: %v, want an error wrapping ErrModeConflict naming %s", what, err, held)
		}
	}

	a, b := startNode(t, dsn, "a", srv), startNode(t, dsn, "b", srv)
	for _, box := range []string{"1001", "1002"} {
		if _, err := a.svc.CreateMailbox(ctx, box); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	eb := engine(b)
	wantConflict("sync on b of 1001, forwarded on a", eb.Add(ctx, imapCfg("1001")), forward.Mode)
	if err := eb.Add(ctx, imapCfg("1002")); err != nil {
		t.Fatal(err)
	}
	wantConflict("forwarding on a of 1002, synced on b", a.fw.Add(ctx, forward.Config{Mailbox: "1002", To: "bob@example.com"}), upstream.Mode)
	eb.Remove("1002")

	// Both nodes restart.
	eb.Close()
	a.close()
	b.close()
	a, b = startNode(t, dsn, "a", srv), startNode(t, dsn, "b", srv)
	eb = engine(b)
	defer eb.Close()
	wantConflict("after the restarts, sync on b of 1001", eb.Add(ctx, imapCfg("1001")), forward.Mode)
	if mode, nodes, err := b.svc.DeliveryMode(ctx, "1001"); err != nil || mode != forward.Mode || strings.Join(nodes, ",") != "a" {
		t.Errorf("DeliveryMode(1001) = %q %v %v, want %s held by a", mode, nodes, err, forward.Mode)
	}
	// a forwards 1001 again under its own claim; Remove frees it for b.
	if err := a.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatalf("a forwarding 1001 again after its restart: %v", err)
	}
	if err := a.fw.Remove("1001"); err != nil {
		t.Fatal(err)
	}
	if err := eb.Add(ctx, imapCfg("1001")); err != nil {
		t.Errorf("sync on b once a stopped forwarding 1001: %v", err)
	}
}
