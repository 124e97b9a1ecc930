package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/embeddedum/um/bench/internal/benchserver"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/emersion/go-imap/v2"
)

func TestMain(m *testing.M) {
	// The tool starts its own binary as um's server; under go test that
	// binary is the test binary.
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

func smallConfig(t testing.TB) Config {
	cfg := defaultConfig()
	// Two clients per mailbox: their EXPUNGEs of the same folder race,
	// and neither may fail.
	cfg.Clients = 6
	cfg.Duration = 2 * time.Second
	cfg.Mailboxes = 3
	cfg.Messages = 3
	cfg.Emails = 2
	cfg.Dir = t.TempDir()
	return cfg
}

// TestRun loads both servers briefly: both must do whole sessions without
// a single failed command. It asserts no speed.
func TestRun(t *testing.T) {
	for _, useTLS := range []bool{true, false} {
		name := "tls"
		if !useTLS {
			name = "plain"
		}
		t.Run(name, func(t *testing.T) {
			cfg := smallConfig(t)
			cfg.TLS = useTLS
			cfg.Duration = time.Second
			var log bytes.Buffer
			cfg.Log = &log
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run = %v\n%s", err, log.Bytes())
			}
			if len(res) != 2 || res[0].Server != "um" || res[1].Server != "dovecot" {
				t.Fatalf("Run returned %+v, want results of um and dovecot", res)
			}
			for _, r := range res {
				if r.Errors != 0 {
					t.Errorf("%s: %d failed commands, first: %s", r.Server, r.Errors, r.FirstErr)
				}
				if r.Sessions == 0 || r.Commands < 10*r.Sessions || r.Fetched < int64(cfg.MinSize)*r.Sessions {
					t.Errorf("%s: %d sessions, %d commands, %d bytes fetched; want whole sessions with a voicemail each", r.Server, r.Sessions, r.Commands, r.Fetched)
				}
				if r.PeakRSS <= 0 || r.PeakRSS < r.IdleRSS {
					t.Errorf("%s: peak RSS %d, before %d", r.Server, r.PeakRSS, r.IdleRSS)
				}
				if r.CPU <= 0 {
					t.Errorf("%s: server CPU %v, want > 0", r.Server, r.CPU)
				}
			}
			if res[0].HWM <= 0 {
				t.Errorf("um: VmHWM = %d, want > 0", res[0].HWM)
			}
			var out bytes.Buffer
			Report(&out, cfg, res)
			if !bytes.Contains(out.Bytes(), []byte("um/Dovecot: commands/s x")) {
				t.Errorf("Report lacks the comparison:\n%s", out.Bytes())
			}
		})
	}
}

// TestRate: an open loop offers the sessions at the rate asked whatever the
// server does, and every command's latency is measured.
func TestRate(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Duration = 2 * time.Second
	cfg.Rate = 10
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		// 20 sessions are due in 2 s, none starts past the deadline.
		if r.Sessions < 10 || r.Sessions > 20 {
			t.Errorf("%s: %d sessions at 10/s for 2 s, want 10-20", r.Server, r.Sessions)
		}
		if len(r.Order) != 10 {
			t.Errorf("%s: latencies of %q, want the session's 10 commands", r.Server, r.Order)
		}
		for _, what := range r.Order {
			p50, p99 := r.Quantile(what, 0.5), r.Quantile(what, 0.99)
			if p50 <= 0 || p99 < p50 {
				t.Errorf("%s %s: p50 %v, p99 %v; want 0 < p50 <= p99", r.Server, what, p50, p99)
			}
		}
	}
	var out bytes.Buffer
	Report(&out, cfg, res)
	if !bytes.Contains(out.Bytes(), []byte("offered 10.0 sessions/s")) || !bytes.Contains(out.Bytes(), []byte("UID FETCH BODY.PEEK[]")) {
		t.Errorf("Report lacks the rate or the latency table:\n%s", out.Bytes())
	}
}

// TestSameMessages checks that the fill gives both servers the same bytes
// for every voicemail, so they serve the same load.
func TestSameMessages(t *testing.T) {
	cfg := smallConfig(t)
	users := make(map[string]string)
	for i := range cfg.Mailboxes {
		users[userName(i)] = benchserver.Password(userName(i))
	}
	dc, err := dovecot.Start(dovecot.Options{Dir: filepath.Join(cfg.Dir, "dovecot"), Users: users})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dc.Stop)
	storeDir := filepath.Join(cfg.Dir, "um")
	if err := fill(context.Background(), cfg, storeDir, dc); err != nil {
		t.Fatal(err)
	}
	ch, err := startChild(storeDir, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ch.Stop(); err != nil {
			t.Error(err)
		}
	})
	user := userName(1)
	umBodies := bodies(t, Target{Addr: ch.TLSAddr, TLSConfig: ch.TLSConfig()}, user)
	dcBodies := bodies(t, Target{Addr: dc.TLSAddr, TLSConfig: dc.TLSConfig()}, user)
	if len(umBodies) != cfg.Messages {
		t.Errorf("um INBOX holds %d messages, want %d voicemails", len(umBodies), cfg.Messages)
	}
	if len(dcBodies) < cfg.Messages {
		t.Errorf("Dovecot INBOX holds %d messages, want %d voicemails and some e-mails", len(dcBodies), cfg.Messages)
	}
	for sum, size := range umBodies {
		if size < int64(cfg.MinSize)*9/10 || size > int64(cfg.MaxSize)*11/10 {
			t.Errorf("um voicemail of %d bytes, want %d-%d", size, cfg.MinSize, cfg.MaxSize)
		}
		if _, ok := dcBodies[sum]; !ok {
			t.Errorf("a voicemail of %d bytes on um is not on Dovecot byte for byte", size)
		}
	}
}

// bodies returns the SHA-256 sums and sizes of the BODY[] of every message
// in the user's INBOX.
func bodies(t testing.TB, target Target, user string) map[[32]byte]int64 {
	t.Helper()
	c, err := target.dial(true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, benchserver.Password(user)).Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	var all imap.SeqSet
	all.AddRange(1, 0)
	section := &imap.FetchItemBodySection{Peek: true}
	msgs, err := c.Fetch(all, &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{section}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[[32]byte]int64)
	for _, m := range msgs {
		b := m.FindBodySection(section)
		out[sha256.Sum256(b)] = int64(len(b))
	}
	c.Logout().Wait()
	return out
}
