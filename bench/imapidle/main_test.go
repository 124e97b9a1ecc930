package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The tool starts its own binary as the server and the clients; under
	// go test that binary is the test binary.
	switch os.Getenv(roleEnv) {
	case roleServer:
		os.Exit(serverMain())
	case roleClient:
		os.Exit(clientMain())
	}
	os.Exit(m.Run())
}

// TestRun runs the tool small: 50 connections from two client processes
// on 5 mailboxes. Every connection must idle, and every one must see the
// deposit into its mailbox. It asserts no speed.
func TestRun(t *testing.T) {
	cfg := defaultConfig()
	cfg.Conns = 50
	cfg.Mailboxes = 5
	cfg.PerProcess = 25
	cfg.Rate = 200
	cfg.Idle = 500 * time.Millisecond
	cfg.Wait = 20 * time.Second
	cfg.Dir = t.TempDir()
	var log bytes.Buffer
	cfg.Log = &log
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run = %v\n%s", err, log.Bytes())
	}
	if res.Idling != 50 || res.Failed != 0 || res.Broken != 0 {
		t.Fatalf("%d idling, %d failed, %d broke (first error %q), want 50 idling", res.Idling, res.Failed, res.Broken, res.FirstErr)
	}
	if res.Missing != 0 || len(res.PerClient) != 50 || len(res.Fanout) != 5 || len(res.Deposit) != 5 {
		t.Errorf("%d clients missed their deposit; %d clients and %d mailboxes timed, %d deposits; want 0, 50, 5, 5",
			res.Missing, len(res.PerClient), len(res.Fanout), len(res.Deposit))
	}
	for i, d := range res.PerClient {
		if d <= 0 || d > cfg.Wait {
			t.Errorf("client latency %d = %v, want within (0, %v]", i, d, cfg.Wait)
		}
	}
	if res.RSS <= 0 || res.Mem.Conns != 50 || res.Mem.Sessions != 50 {
		t.Errorf("server RSS %d, %d connections, %d sessions; want > 0, 50, 50", res.RSS, res.Mem.Conns, res.Mem.Sessions)
	}
	var out bytes.Buffer
	Report(&out, res)
	if !strings.Contains(out.String(), "deposit to the last client of its mailbox: p50") {
		t.Errorf("Report lacks the fan-out:\n%s", out.String())
	}
}

// TestSourceAddr checks that the connections' source addresses are
// distinct, in 127.0.0.0/8, spread over its second byte, and never the
// server's.
func TestSourceAddr(t *testing.T) {
	seen := make(map[string]bool)
	second := make(map[byte]bool)
	for i := range 20000 {
		ip := sourceAddr(i).To4()
		if ip[0] != 127 || ip.String() == "127.0.0.1" || ip[3] == 0 || ip[3] == 255 {
			t.Fatalf("sourceAddr(%d) = %v, want in 127.0.0.0/8, not 127.0.0.1, not ending in 0 or 255", i, ip)
		}
		if seen[ip.String()] {
			t.Fatalf("sourceAddr(%d) = %v, used before", i, ip)
		}
		seen[ip.String()] = true
		second[ip[1]] = true
	}
	if len(second) < 200 {
		t.Errorf("20,000 addresses use %d values of the second byte, want them spread", len(second))
	}
}
