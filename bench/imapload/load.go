package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/embeddedum/um/bench/internal/benchserver"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// counters are shared by the clients of one load.
type counters struct {
	sessions, commands, errors, fetched, late atomic.Int64

	mu       sync.Mutex
	firstErr string
	latency  map[string][]time.Duration // per command, each success's
	order    []string                   // commands in the order first seen
}

// took adds one session's command latencies.
func (c *counters) took(lat map[string][]time.Duration, order []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.latency == nil {
		c.latency = make(map[string][]time.Duration)
	}
	for _, what := range order {
		if _, ok := c.latency[what]; !ok {
			c.order = append(c.order, what)
		}
		c.latency[what] = append(c.latency[what], lat[what]...)
	}
}

func (c *counters) fail(client int, what string, err error) {
	c.errors.Add(1)
	c.mu.Lock()
	if c.firstErr == "" {
		c.firstErr = fmt.Sprintf("client %d: %s: %v", client, what, err)
	}
	c.mu.Unlock()
}

// load runs cfg.Clients clients against t for cfg.Duration while sampling
// the memory of t's process tree.
func load(ctx context.Context, cfg Config, t Target) (Result, error) {
	idle, err := dovecot.TreeRSS(t.PID)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", t.Name, err)
	}
	cfg.logf("%s: %d clients for %v (RSS before: %.1f MiB)", t.Name, cfg.Clients, cfg.Duration, mib(idle))

	stopSampling := dovecot.SamplePeakRSS(t.PID, 100*time.Millisecond)
	cpu0, err := dovecot.TreeCPU(t.PID)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", t.Name, err)
	}
	var c counters
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(i)))
			user := userName(i % cfg.Mailboxes)
			for k := 0; time.Now().Before(deadline) && ctx.Err() == nil; k++ {
				if cfg.Rate > 0 && !waitTurn(ctx, start, deadline, cfg, i, k, &c) {
					return
				}
				if session(cfg, t, user, i, rng, &c) {
					c.sessions.Add(1)
				} else {
					// A broken server should not be hammered in a tight loop.
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, err := dovecot.TreeCPU(t.PID)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", t.Name, err)
	}
	peak := max(stopSampling(), idle)
	for _, d := range c.latency {
		slices.Sort(d)
	}
	r := Result{
		Server:   t.Name,
		Elapsed:  elapsed,
		Sessions: c.sessions.Load(),
		Commands: c.commands.Load(),
		Errors:   c.errors.Load(),
		Fetched:  c.fetched.Load(),
		FirstErr: c.firstErr,
		IdleRSS:  idle,
		PeakRSS:  peak,
		CPU:      cpu1 - cpu0,
		Late:     c.late.Load(),
		Latency:  c.latency,
		Order:    c.order,
	}
	cfg.logf("%s: %d sessions, %.0f commands/s, %d errors, peak RSS %.1f MiB", t.Name, r.Sessions, r.CommandsPerSec(), r.Errors, mib(r.PeakRSS))
	return r, nil
}

// waitTurn waits for client i's k-th session on the open loop of
// cfg.Rate sessions a second over all clients: session k*Clients+i starts
// at start + (k*Clients+i)/Rate, so the offered load does not depend on how
// fast the server answers. A session whose time passed while the client was
// still busy starts at once and counts as late. It reports false when the
// turn falls after deadline or ctx ends.
func waitTurn(ctx context.Context, start, deadline time.Time, cfg Config, i, k int, c *counters) bool {
	at := start.Add(time.Duration(float64(k*cfg.Clients+i) / cfg.Rate * float64(time.Second)))
	if !at.Before(deadline) {
		return false
	}
	wait := time.Until(at)
	if wait <= 0 {
		// A timer's own slack is not the server's fault.
		if wait < -10*time.Millisecond {
			c.late.Add(1)
		}
		return true
	}
	tm := time.NewTimer(wait)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// session runs one client session and reports whether every command of it
// succeeded.
func session(cfg Config, t Target, user string, client int, rng *rand.Rand, c *counters) bool {
	cl, err := t.dial(cfg.TLS)
	if err != nil {
		c.fail(client, "dial", err)
		return false
	}
	defer cl.Close()
	lat := make(map[string][]time.Duration)
	var order []string
	defer func() { c.took(lat, order) }()
	began := time.Now()
	// step ends the command that began at began, and begins the next.
	step := func(what string, err error) bool {
		if err != nil {
			c.fail(client, what, err)
			return false
		}
		c.commands.Add(1)
		now := time.Now()
		if _, ok := lat[what]; !ok {
			order = append(order, what)
		}
		lat[what] = append(lat[what], now.Sub(began))
		began = now
		return true
	}

	if !step("LOGIN", cl.Login(user, benchserver.Password(user)).Wait()) {
		return false
	}
	sel, err := cl.Select("INBOX", nil).Wait()
	if !step("SELECT INBOX", err) {
		return false
	}
	var voice []imap.UID
	if sel.NumMessages > 0 {
		var all imap.SeqSet
		all.AddRange(1, sel.NumMessages)
		msgs, err := cl.Fetch(all, &imap.FetchOptions{
			UID: true, Envelope: true, Flags: true, RFC822Size: true,
		}).Collect()
		if !step("FETCH headers", err) {
			return false
		}
		for _, m := range msgs {
			// Voicemail, not the small e-mails Dovecot's INBOX also holds.
			if m.RFC822Size >= int64(cfg.MinSize)/2 {
				voice = append(voice, m.UID)
			}
		}
	}
	if len(voice) > 0 {
		uid := voice[rng.IntN(len(voice))]
		n, err := fetchBody(cl, uid)
		c.fetched.Add(n)
		if !step("UID FETCH BODY.PEEK[]", err) {
			return false
		}
		op := imap.StoreFlagsAdd
		if rng.IntN(2) == 0 {
			op = imap.StoreFlagsDel
		}
		err = cl.Store(imap.UIDSetNum(voice[rng.IntN(len(voice))]), &imap.StoreFlags{
			Op: op, Silent: true, Flags: []imap.Flag{imap.FlagSeen},
		}, nil).Close()
		if !step("UID STORE \\Seen", err) {
			return false
		}
	}
	mail := smallEmail(user, rng.IntN(1000))
	w := cl.Append(archive, int64(len(mail)), nil)
	w.Write(mail)
	w.Close()
	ad, err := w.Wait()
	if !step("APPEND", err) {
		return false
	}
	if _, err := cl.Select(archive, nil).Wait(); !step("SELECT Archive", err) {
		return false
	}
	if ad.UID == 0 {
		c.fail(client, "APPEND", fmt.Errorf("no APPENDUID"))
		return false
	}
	err = cl.Store(imap.UIDSetNum(ad.UID), &imap.StoreFlags{
		Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagDeleted},
	}, nil).Close()
	if !step("UID STORE \\Deleted", err) {
		return false
	}
	if !step("EXPUNGE", cl.Expunge().Close()) {
		return false
	}
	return step("LOGOUT", cl.Logout().Wait())
}

// fetchBody fetches BODY.PEEK[] of uid, reading it as it arrives, and
// returns its length.
func fetchBody(cl *imapclient.Client, uid imap.UID) (int64, error) {
	cmd := cl.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{
		BodySection: []*imap.FetchItemBodySection{{Peek: true}},
	})
	var n int64
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		for item := msg.Next(); item != nil; item = msg.Next() {
			if b, ok := item.(imapclient.FetchItemDataBodySection); ok && b.Literal != nil {
				k, err := io.Copy(io.Discard, b.Literal)
				n += k
				if err != nil {
					cmd.Close()
					return n, err
				}
			}
		}
	}
	if err := cmd.Close(); err != nil {
		return n, err
	}
	if n == 0 {
		return 0, fmt.Errorf("UID %d: no body", uid)
	}
	return n, nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
