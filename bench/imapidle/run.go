package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/embeddedum/um/bench/internal/benchserver"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/internal/selfsigned"
)

// Config is one run of the tool.
type Config struct {
	Conns       int
	Mailboxes   int
	Messages    int // voicemails in each INBOX before the clients connect
	PerProcess  int // connections per client process
	Rate        float64
	Parallel    int
	Idle        time.Duration
	Depositors  int
	Wait        time.Duration
	HeapProfile string
	Dir         string    // work directory; a temporary one when empty
	Log         io.Writer // progress; nil for none
}

func (c Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, format+"\n", args...)
	}
}

// Result is what one run measured.
type Result struct {
	Config
	Limit    string // what capped Conns below the number asked for, if anything
	Idling   int    // connections set up and idling
	Failed   int    // connections that could not be set up
	Broken   int    // connections that broke later
	Missing  int    // idling connections that did not see their deposit
	FirstErr string
	SetUp    time.Duration // from the first connection to the last idling
	SetUpCPU time.Duration // the server's, meanwhile

	RSSBase, PSSBase int64 // the server before the clients connected
	RSS, PSS         int64 // the server at the end of the idle period
	RSSFreed         int64 // and after it returned its free memory to the system
	Mem              memStats
	IdleCPU          time.Duration // the server's, over Config.Idle
	ClientIdleCPU    time.Duration // the client processes', over Config.Idle
	ClientRSS        int64         // the client processes' at the end of the idle period

	// Fanout holds, per mailbox, the time from the start of its deposit
	// until the last of its clients read the EXISTS; PerClient the same
	// for every client; Deposit how long the deposits took; AfterCommit,
	// per mailbox, the time from the deposit's return (its commit and
	// the notification of its subscribers are done) until the last
	// client read the EXISTS, zero when that came first.
	Fanout, PerClient, Deposit, AfterCommit []time.Duration
	FanoutCPU                               time.Duration // the server's, deposits and notifications
	RSSAfter                                int64
}

// reservedFiles are the descriptors the server needs beside its
// connections: its standard streams, the listener, the poller, the store's
// database and the open content files boltstore pools for deposits (up to
// 48), and the files of the deposits being written.
const reservedFiles = 128

// Run fills a store, starts the server and the clients, and measures.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Conns < 1 || cfg.Mailboxes < 1 || cfg.PerProcess < 1 || cfg.Rate <= 0 {
		return nil, errors.New("need conns, mailboxes, per-process >= 1 and rate > 0")
	}
	raiseFileLimit()
	res := &Result{Config: cfg}
	if limit := fileLimit() - reservedFiles; cfg.Conns > limit {
		res.Limit = fmt.Sprintf("RLIMIT_NOFILE: the hard limit of %d open files per process leaves the server %d connections beside %d files for the rest, not %d",
			fileLimit(), limit, reservedFiles, cfg.Conns)
		cfg.logf("%s", res.Limit)
		cfg.Conns = limit
	}
	if limit := fileLimit() - reservedFiles; cfg.PerProcess > limit {
		cfg.PerProcess = limit
	}
	res.Config = cfg
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "imapidle-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	storeDir := filepath.Join(dir, "um")
	cfg.logf("filling %d mailboxes with %d voicemails each", cfg.Mailboxes, cfg.Messages)
	t0 := time.Now()
	if err := fill(ctx, cfg, storeDir); err != nil {
		return nil, err
	}
	cfg.logf("filled in %v", time.Since(t0).Round(time.Millisecond))

	cert, err := selfsigned.New(nil)
	if err != nil {
		return nil, err
	}
	srv, err := startServer(storeDir, cert.CertPEM, cert.KeyPEM)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	time.Sleep(500 * time.Millisecond)
	if res.RSSBase, res.PSSBase, err = memory(srv.PID()); err != nil {
		return nil, err
	}

	// The clients.
	nproc := (cfg.Conns + cfg.PerProcess - 1) / cfg.PerProcess
	var procs []*clientProc
	defer func() {
		for _, p := range procs {
			p.Stop()
		}
	}()
	cfg.logf("connecting %d clients from %d processes, %.0f per second", cfg.Conns, nproc, cfg.Rate)
	t0 = time.Now()
	setUpCPU, err := dovecot.TreeCPU(srv.PID())
	if err != nil {
		return nil, err
	}
	for k := range nproc {
		first := k * cfg.PerProcess
		p, err := startClient(clientConfig{
			Addr: srv.Addr, CertPEM: cert.CertPEM, First: first, Count: min(cfg.PerProcess, cfg.Conns-first),
			Mailboxes: cfg.Mailboxes, Rate: cfg.Rate / float64(nproc), Parallel: cfg.Parallel,
		})
		if err != nil {
			return nil, err
		}
		procs = append(procs, p)
	}
	for _, p := range procs {
		r, err := p.ready()
		if err != nil {
			return nil, err
		}
		res.Idling += r.Idling
		res.Failed += r.Failed
		if res.FirstErr == "" {
			res.FirstErr = r.FirstErr
		}
	}
	res.SetUp = time.Since(t0)
	if cpu, err := dovecot.TreeCPU(srv.PID()); err == nil {
		res.SetUpCPU = cpu - setUpCPU
	}
	cfg.logf("%d idling, %d failed, in %v", res.Idling, res.Failed, res.SetUp.Round(time.Millisecond))
	if res.FirstErr != "" {
		cfg.logf("first error: %s", res.FirstErr)
	}

	// Idle.
	time.Sleep(2 * time.Second) // let set-up garbage and timers settle
	cpu0, err := threadCPU(srv.PID())
	if err != nil {
		return nil, err
	}
	ccpu0 := clientCPU(procs)
	cfg.logf("measuring the idle server for %v", cfg.Idle)
	time.Sleep(cfg.Idle)
	cpu1, err := threadCPU(srv.PID())
	if err != nil {
		return nil, err
	}
	res.IdleCPU = cpu1 - cpu0
	res.ClientIdleCPU = clientCPU(procs) - ccpu0
	if res.RSS, res.PSS, err = memory(srv.PID()); err != nil {
		return nil, err
	}
	for _, p := range procs {
		rss, _ := dovecot.StatusField(p.PID(), "VmRSS")
		res.ClientRSS += rss
	}
	if err := srv.call(&res.Mem, "stats"); err != nil {
		return nil, err
	}
	var ok struct{ Err string }
	if err := srv.call(&ok, "free"); err != nil {
		return nil, err
	}
	if res.RSSFreed, _, err = memory(srv.PID()); err != nil {
		return nil, err
	}
	if cfg.HeapProfile != "" {
		var r struct{ Err string }
		if err := srv.call(&r, "heap %s", cfg.HeapProfile); err != nil {
			return nil, err
		}
		if r.Err != "" {
			return nil, fmt.Errorf("heap profile: %s", r.Err)
		}
	}
	cfg.logf("server: RSS %.1f MiB, PSS %.1f MiB, %v CPU idle", mib(res.RSS), mib(res.PSS), res.IdleCPU)

	// Fan-out.
	cfg.logf("depositing into %d mailboxes, %d at a time", cfg.Mailboxes, cfg.Depositors)
	var dt depositTimes
	cpu0, _ = dovecot.TreeCPU(srv.PID())
	if err := srv.call(&dt, "deposit %d %d", cfg.Mailboxes, cfg.Depositors); err != nil {
		return nil, err
	}
	if dt.Err != "" {
		return nil, errors.New(dt.Err)
	}
	seen := make([]clientSeen, len(procs))
	var wg sync.WaitGroup
	errs := make([]error, len(procs))
	for k, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seen[k], errs[k] = p.wait(cfg.Wait)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cpu1, _ = dovecot.TreeCPU(srv.PID())
	res.FanoutCPU = cpu1 - cpu0
	res.RSSAfter, _, _ = memory(srv.PID())
	res.fanout(dt, procs, seen)
	return res, nil
}

// fanout computes the latencies from the deposit times and the times the
// clients saw them.
func (res *Result) fanout(dt depositTimes, procs []*clientProc, seen []clientSeen) {
	last := make([]int64, res.Mailboxes)
	missed := make([]bool, res.Mailboxes)
	for k, p := range procs {
		res.Broken += seen[k].Broken
		for j, t := range seen[k].Seen {
			mb := (p.cfg.First + j) % res.Mailboxes
			switch {
			case t < 0: // failed or broken: counted as such
				missed[mb] = true
				continue
			case t == 0:
				missed[mb] = true
				res.Missing++
				continue
			}
			last[mb] = max(last[mb], t)
			res.PerClient = append(res.PerClient, time.Duration(t-dt.Start[mb]))
		}
	}
	for mb := range res.Mailboxes {
		res.Deposit = append(res.Deposit, time.Duration(dt.End[mb]-dt.Start[mb]))
		if last[mb] > 0 && !missed[mb] {
			res.Fanout = append(res.Fanout, time.Duration(last[mb]-dt.Start[mb]))
			res.AfterCommit = append(res.AfterCommit, time.Duration(max(last[mb]-dt.End[mb], 0)))
		}
	}
	slices.Sort(res.Fanout)
	slices.Sort(res.PerClient)
	slices.Sort(res.Deposit)
	slices.Sort(res.AfterCommit)
}

// fill creates the mailboxes and deposits the voicemails they start with.
func fill(ctx context.Context, cfg Config, dir string) error {
	svc, closeAll, err := benchserver.Open(dir)
	if err != nil {
		return err
	}
	defer closeAll()
	// Deposits of different mailboxes share commits: fill with several.
	work := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				mb, err := svc.CreateMailbox(ctx, userName(i))
				for j := 0; err == nil && j < cfg.Messages; j++ {
					err = deposit(ctx, mb, j)
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("fill %s: %w", userName(i), err):
					default:
					}
				}
			}
		}()
	}
	for i := range cfg.Mailboxes {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// memory returns a process's VmRSS and PSS in bytes.
func memory(pid int) (rss, pss int64, err error) {
	if rss, err = dovecot.StatusField(pid, "VmRSS"); err != nil {
		return 0, 0, err
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return rss, 0, nil // PSS is not reported everywhere
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			pss = kb << 10
			break
		}
	}
	return rss, pss, nil
}

// threadCPU returns the time the threads of a process have run, in
// nanoseconds (/proc's schedstat; utime and stime count 10 ms ticks).
func threadCPU(pid int) (time.Duration, error) {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum, nil
}

func clientCPU(procs []*clientProc) time.Duration {
	var sum time.Duration
	for _, p := range procs {
		d, _ := dovecot.TreeCPU(p.PID())
		sum += d
	}
	return sum
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
