package main

import (
	"bytes"
	"os"
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
// of the server's process, and a report row. It asserts no speed.
func TestRun(t *testing.T) {
	cfg := defaultConfig()
	cfg.Users, cfg.Clients, cfg.Duration = 3, 3, 2*time.Second
	cfg.Emails, cfg.Voicemails = 10, 2
	cfg.Dir = t.TempDir()
	var log bytes.Buffer
	cfg.Log = &log
	res, err := Run(cfg)
	if err != nil {
		t.Fatalf("Run = %v\n%s", err, log.Bytes())
	}
	if len(res) != 3 {
		t.Fatalf("Run gave %d results, want one per server", len(res))
	}
	for i, want := range []string{"um", "dovecot", "memserver"} {
		r := res[i]
		if r.Server != want {
			t.Errorf("result %d is %q, want %q", i, r.Server, want)
		}
		if r.Commands < 20 || r.Kinds["FETCH"] == nil || r.Kinds["APPEND"].Count == 0 || r.Kinds["SELECT"].Timed == 0 {
			t.Errorf("%s: %d commands, kinds %v: want FETCH, APPEND and SELECT done", r.Server, r.Commands, r.Order)
		}
		if r.CPU <= 0 || r.PeakRSS <= 0 {
			t.Errorf("%s: CPU %v, peak RSS %d: want both measured", r.Server, r.CPU, r.PeakRSS)
		}
	}
	var out bytes.Buffer
	Report(&out, cfg, res)
	for _, want := range []string{"| um |", "| dovecot |", "| memserver |", "mean latency per command"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}
