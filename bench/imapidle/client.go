package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/embeddedum/um/bench/internal/benchserver"
	"github.com/embeddedum/um/bench/internal/childproc"
)

// clientConfig is the share of the connections one client process holds:
// connections First to First+Count-1.
type clientConfig struct {
	Addr      string
	CertPEM   []byte
	First     int
	Count     int
	Mailboxes int
	Rate      float64 // new connections per second in this process
	Parallel  int
}

// clientReady is what a client process prints once its connections are
// set up.
type clientReady struct {
	Idling   int
	Failed   int
	FirstErr string
}

// clientSeen is what a client process prints when asked: for each of its
// connections, in order, the wall-clock time (Unix nanoseconds) at which it
// read a new EXISTS, 0 if it has not, -1 if it failed or broke before; and
// how many connections broke after they were set up.
type clientSeen struct {
	Seen   []int64
	Broken int
}

// sourceAddr returns connection i's source address: the second, third and
// fourth bytes all move, so the addresses spread over 127.0.0.0/8, and none
// is 127.0.0.1 (the server's) or ends in 0 or 255.
func sourceAddr(i int) net.IP {
	return net.IPv4(127, byte(2+i%253), byte(1+(i/253)%254), byte(1+(i/(253*254))%254))
}

// clientMain sets up the connections clientEnv describes, prints a
// clientReady line, and then answers "wait <duration>" (wait until every
// connection saw a new EXISTS, or the duration passed) with a clientSeen
// line. It exits when standard input ends.
func clientMain() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "imapidle (client):", err)
		return 1
	}
	raiseFileLimit()
	var cfg clientConfig
	if err := json.Unmarshal([]byte(os.Getenv(clientEnv)), &cfg); err != nil {
		return fail(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.CertPEM) {
		return fail(errors.New("no certificate"))
	}
	tc := &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	cs := &clients{seen: make([]atomic.Int64, cfg.Count), all: make(chan struct{})}
	cs.left.Store(int64(cfg.Count))

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		failed   int
		firstErr string
	)
	sem := make(chan struct{}, max(cfg.Parallel, 1))
	interval := time.Duration(float64(time.Second) / cfg.Rate)
	start := time.Now()
	for k := range cfg.Count {
		// Paced: the k-th connection starts no sooner than k intervals in.
		if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
			time.Sleep(d)
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			i := cfg.First + k
			c, exists, err := setUp(cfg.Addr, tc, i, userName(i%cfg.Mailboxes))
			<-sem
			if err != nil {
				mu.Lock()
				failed++
				if firstErr == "" {
					firstErr = fmt.Sprintf("connection %d: %v", i, err)
				}
				mu.Unlock()
				cs.seen[k].Store(-1)
				cs.done()
				wg.Done()
				return
			}
			wg.Done()
			cs.idle(c, k, exists)
		}()
	}
	wg.Wait()
	out := json.NewEncoder(os.Stdout)
	out.Encode(clientReady{Idling: cfg.Count - failed, Failed: failed, FirstErr: firstErr})

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 2 && f[0] == "wait" {
			d, _ := time.ParseDuration(f[1])
			select {
			case <-cs.all:
			case <-time.After(d):
			}
			res := clientSeen{Seen: make([]int64, cfg.Count), Broken: int(cs.broken.Load())}
			for k := range cs.seen {
				res.Seen[k] = cs.seen[k].Load()
			}
			out.Encode(res)
		}
	}
	return 0
}

// clients are the connections of one client process.
type clients struct {
	seen   []atomic.Int64
	left   atomic.Int64 // connections that have not seen a new EXISTS (nor failed)
	all    chan struct{}
	broken atomic.Int64
}

func (cs *clients) done() {
	if cs.left.Add(-1) == 0 {
		close(cs.all)
	}
}

// idle reads what the server sends an idling connection, and notes the
// time of the first EXISTS above exists.
func (cs *clients) idle(c *conn, k int, exists int) {
	for {
		line, err := c.line()
		if err != nil {
			cs.broken.Add(1)
			if cs.seen[k].CompareAndSwap(0, -1) {
				cs.done()
			}
			return
		}
		if n, ok := existsCount(line); ok && n > exists && cs.seen[k].CompareAndSwap(0, time.Now().UnixNano()) {
			cs.done()
		}
	}
}

// conn is a minimal IMAP client over TLS: just what LOGIN, SELECT and
// IDLE need.
type conn struct {
	tc *tls.Conn
	br *bufio.Reader
}

func (c *conn) line() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	for errors.Is(err, bufio.ErrBufferFull) {
		// A long line (a FETCH); only its start matters here.
		_, err = c.br.ReadSlice('\n')
	}
	return bytes.TrimRight(line, "\r\n"), err
}

// command sends a tagged command and reads up to its completion, which
// must be OK, or up to a continuation when cont is set. It returns the
// highest "* n EXISTS" read meanwhile.
func (c *conn) command(tag, text string, cont bool) (exists int, err error) {
	if _, err := io.WriteString(c.tc, tag+" "+text+"\r\n"); err != nil {
		return 0, err
	}
	for {
		line, err := c.line()
		if err != nil {
			return 0, err
		}
		if n, ok := existsCount(line); ok {
			exists = n
		}
		switch {
		case cont && bytes.HasPrefix(line, []byte("+ ")):
			return exists, nil
		case bytes.HasPrefix(line, []byte(tag+" ")):
			if !bytes.HasPrefix(line, []byte(tag+" OK")) {
				return 0, fmt.Errorf("%s: %s", strings.Fields(text)[0], line)
			}
			return exists, nil
		}
	}
}

// existsCount parses "* n EXISTS".
func existsCount(line []byte) (int, bool) {
	s, ok := strings.CutPrefix(string(line), "* ")
	if !ok {
		return 0, false
	}
	num, rest, ok := strings.Cut(s, " ")
	if !ok || !strings.EqualFold(rest, "EXISTS") {
		return 0, false
	}
	n, err := strconv.Atoi(num)
	return n, err == nil
}

// setUp connects from connection i's source address, logs in as user,
// selects INBOX and starts IDLE. It returns the INBOX's message count.
func setUp(addr string, tc *tls.Config, i int, user string) (*conn, int, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: sourceAddr(i)}, Timeout: 30 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, 0, err
	}
	c := &conn{tc: tls.Client(nc, tc)}
	c.br = bufio.NewReaderSize(c.tc, 512)
	nc.SetDeadline(time.Now().Add(60 * time.Second))
	fail := func(err error) (*conn, int, error) { nc.Close(); return nil, 0, err }
	if err := c.tc.Handshake(); err != nil {
		return fail(fmt.Errorf("TLS: %w", err))
	}
	greeting, err := c.line()
	if err != nil {
		return fail(err)
	}
	if !bytes.HasPrefix(greeting, []byte("* OK")) {
		return fail(fmt.Errorf("greeting %q", greeting))
	}
	if _, err := c.command("a", "LOGIN "+user+" "+benchserver.Password(user), false); err != nil {
		return fail(err)
	}
	exists, err := c.command("b", "SELECT INBOX", false)
	if err != nil {
		return fail(err)
	}
	if _, err := c.command("c", "IDLE", true); err != nil {
		return fail(err)
	}
	nc.SetDeadline(time.Time{})
	return c, exists, nil
}

// clientProc is a client process.
type clientProc struct {
	proc *childproc.Proc
	out  *json.Decoder
	cfg  clientConfig
}

func startClient(cfg clientConfig) (*clientProc, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	proc, err := childproc.Start("client process", roleEnv+"="+roleClient, clientEnv+"="+string(b))
	if err != nil {
		return nil, err
	}
	return &clientProc{proc: proc, out: json.NewDecoder(proc.Stdout), cfg: cfg}, nil
}

func (p *clientProc) PID() int { return p.proc.PID() }

// ready waits for the process's connections to be set up.
func (p *clientProc) ready() (clientReady, error) {
	var r clientReady
	if err := p.out.Decode(&r); err != nil {
		return r, fmt.Errorf("client process: %w", err)
	}
	return r, nil
}

// wait asks for the times the connections saw the deposit.
func (p *clientProc) wait(d time.Duration) (clientSeen, error) {
	var s clientSeen
	if _, err := fmt.Fprintf(p.proc.Stdin, "wait %s\n", d); err != nil {
		return s, fmt.Errorf("client process: %w", err)
	}
	if err := p.out.Decode(&s); err != nil {
		return s, fmt.Errorf("client process: %w", err)
	}
	return s, nil
}

func (p *clientProc) Stop() { p.proc.Stop(30 * time.Second) }

// raiseFileLimit lifts the soft limit of open files to the hard one (Go
// does so at start-up too; this says it where it matters).
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// fileLimit returns the hard limit of open files.
func fileLimit() int {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 1024
	}
	return int(min(l.Max, 1<<30))
}
