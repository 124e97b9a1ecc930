package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The servers run as children of this program; under go test that is
	// the test binary.
	if spec := os.Getenv(serverEnv); spec != "" {
		os.Exit(serveChild(spec))
	}
	os.Exit(m.Run())
}

// TestRun runs imaptest's stress mode briefly against each server: every
// run must yield commands of the kinds imaptest does, CPU time and memory
// of the server's process, and a report row, and with -pprof the profiles
// of the Go children. It asserts no speed.
func TestRun(t *testing.T) {
	cfg := defaultConfig()
	cfg.Users, cfg.Clients, cfg.Duration = 3, 3, 2*time.Second
	cfg.Emails, cfg.Voicemails = 10, 2
	cfg.Dir = t.TempDir()
	cfg.Pprof = t.TempDir()
	cfg.Servers = "um,um-memstore,dovecot,memserver"
	var log bytes.Buffer
	cfg.Log = &log
	res, err := Run(cfg)
	if err != nil {
		t.Fatalf("Run = %v\n%s", err, log.Bytes())
	}
	if len(res) != 4 {
		t.Fatalf("Run gave %d results, want one per server", len(res))
	}
	for i, want := range []string{"um", "um-memstore", "dovecot", "memserver"} {
		r := res[i]
		if r.Server != want {
			t.Errorf("result %d is %q, want %q", i, r.Server, want)
		}
		if r.Commands < 20 || r.Kinds["FETCH"] == nil || r.Kinds["APPEND"].Count == 0 || r.Kinds["SELECT"].Timed == 0 {
			t.Errorf("%s: %d commands, kinds %v: want FETCH, APPEND and SELECT done", r.Server, r.Commands, r.Order)
		}
		if r.ClientCPU <= 0 {
			t.Errorf("%s: imaptest's CPU %v, want it measured", r.Server, r.ClientCPU)
		}
		if r.InFlight() <= 0 || r.LoginsPerSec() <= 0 {
			t.Errorf("%s: %.2f commands in flight, %.1f logins/s: want both above 0", r.Server, r.InFlight(), r.LoginsPerSec())
		}
		if r.PeakAnon <= 0 {
			t.Errorf("%s: peak anonymous memory %d, want it measured", r.Server, r.PeakAnon)
		}
		// The two are sampled apart, so the peaks may miss each other a little.
		if r.PeakPSS <= 0 || r.PeakPSS > r.PeakRSS+r.PeakRSS/10 {
			t.Errorf("%s: peak PSS %d with peak RSS %d, want 0 < PSS <= about RSS", r.Server, r.PeakPSS, r.PeakRSS)
		}
		if r.CPU <= 0 || r.PeakRSS <= 0 {
			t.Errorf("%s: CPU %v, peak RSS %d: want both measured", r.Server, r.CPU, r.PeakRSS)
		}
	}
	// -pprof: each Go child wrote its profiles, named by server and round.
	for _, run := range []string{"um-0", "um-memstore-0", "memserver-0"} {
		for _, p := range []string{"cpu.pprof", "mutex.pprof", "block.pprof", "heap.pprof", "allocs.pprof", "peakheap.pprof", "peak.txt"} {
			fi, err := os.Stat(filepath.Join(cfg.Pprof, run, p))
			if err != nil || fi.Size() == 0 {
				t.Errorf("%s: %s profile: %v, want a non-empty file", run, p, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(cfg.Pprof, "dovecot-0")); err == nil {
		t.Error("Dovecot has a profile folder; only the Go children are profiled")
	}
	var out bytes.Buffer
	Report(&out, cfg, res)
	for _, want := range []string{"| um |", "| um-memstore |", "| dovecot |", "| memserver |", "mean latency per command"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

// TestInFlight: the commands in flight are the summed latency over the
// run's length (Little's law), whatever the kinds.
func TestInFlight(t *testing.T) {
	r := Result{Elapsed: 10 * time.Second, Kinds: map[string]*Kind{
		"LOGIN": {Count: 100, Timed: 100, Latency: 2 * time.Second},
		"FETCH": {Count: 1000, Timed: 1000, Latency: 28 * time.Second},
	}}
	if got := r.InFlight(); got != 3 {
		t.Errorf("InFlight = %v, want 3: 30 s of latency over 10 s", got)
	}
	if got := r.LoginsPerSec(); got != 10 {
		t.Errorf("LoginsPerSec = %v, want 10", got)
	}
}
