package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/internal/testwait"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics from addr and parses it with Prometheus's own
// text parser.
func scrape(t testing.TB, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value returns the value of the sample of name whose labels include
// every pair in labels ("k=v"), failing the test when there is none.
func value(t testing.TB, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
next:
	for _, m := range f.GetMetric() {
		for _, want := range labels {
			k, v, _ := strings.Cut(want, "=")
			found := false
			for _, l := range m.GetLabel() {
				found = found || l.GetName() == k && l.GetValue() == v
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	t.Fatalf("/metrics has no %s with %v", name, labels)
	return 0
}

// The demo serves /metrics on -http: deposits, lamp changes, hook latency,
// IMAP connections and store latency move as the phone and a mail client
// act.
func TestMetricsEndpoint(t *testing.T) {
	bin := buildPBX(t)
	addr := freeAddr(t)
	dir := t.TempDir()
	p := startPBX(t, bin, dir, "-user", "1001:secret1", "-http", addr)
	before := scrape(t, addr)
	if got := value(t, before, "um_deposits_total", "urgent=false"); got != 0 {
		t.Errorf("um_deposits_total before any deposit = %v, want 0", got)
	}
	p.send("deposit 1001 5551234")
	p.expect("MWI 1001 on 1/0 (0/0)", "ok 1")
	p.send("urgent 1001 5550000")
	p.expect("MWI 1001 on 2/0 (1/0)", "ok 2")
	p.send("heard 1001 1")
	p.expect("MWI 1001 on 1/1 (1/0)", "ok")

	c := dialIMAP(t, p, dir, "1001", "secret1", nil)
	defer c.Close()
	after := scrape(t, addr)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"um_deposits_total", []string{"urgent=false"}, 1},
		{"um_deposits_total", []string{"urgent=true"}, 1},
		{"um_deposited_seconds_total", nil, 6},
		{"um_mwi_calls_total", []string{"lamp=on", "origin=local"}, 3},
		{"um_mwi_hook_duration_seconds", nil, 3},
		{"um_imap_connections", nil, 1},
		{"um_imap_sessions", nil, 1},
		{"um_imap_login_failures_total", nil, 0},
	} {
		if got := value(t, after, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// Go's own metrics are there for the operator too.
	value(t, after, "go_goroutines")
	c.Logout().Wait()
	p.stdin.Close()
	p.waitExit()
}

// -http "" serves nothing; a busy address fails the start with a clear
// error and no output.
func TestHTTPFlag(t *testing.T) {
	addr := freeAddr(t)
	out, _ := runScript(t, t.TempDir(), "mwi 1001\n", twoUsers...)
	if out != "ok 0/0 (0/0)\n" {
		t.Errorf("output with -http \"\" = %q", out)
	}
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Error("something answers /metrics on a free address")
	}

	busy := startPBX(t, buildPBX(t), t.TempDir(), "-user", "1001:secret1", "-http", addr)
	defer func() { busy.stdin.Close(); busy.waitExit() }()
	var stdout, stderr strings.Builder
	args := []string{"-data", t.TempDir(), "-imap", "127.0.0.1:0", "-imaps", "127.0.0.1:0", "-http", addr, "-user", "1001:x"}
	err := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "-http") {
		t.Errorf("run with -http on a busy address = %v, want an -http error", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("standard output = %q, want nothing", stdout.String())
	}
}

// The console's actions refuse requests that do not come from its own page.
func TestConsoleActionsNeedTheConsole(t *testing.T) {
	addr := freeAddr(t)
	p := startPBX(t, buildPBX(t), t.TempDir(), "-user", "1001:secret1", "-http", addr)
	p.send("deposit 1001 5551234")
	p.expect("MWI 1001 on 1/0 (0/0)", "ok 1")
	id := messageID(t, addr, "1001", "INBOX", 1)
	url := "http://" + addr + "/api/mailboxes/1001/messages/" + id + "/delete"
	for _, tc := range []struct {
		name    string
		headers map[string]string
	}{
		{"no header", nil},
		{"other origin", map[string]string{"X-Console": "1", "Origin": "http://evil.example"}},
	} {
		req, _ := http.NewRequest("POST", url, nil)
		for k, v := range tc.headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: POST delete = %s, want 403", tc.name, resp.Status)
		}
	}
	p.send("list 1001")
	p.expect("ok 1", "1 new 5551234 3s")
	p.stdin.Close()
	p.waitExit()
}

// mailboxStatus reads the console's view of box's sync status.
func mailboxStatus(t testing.TB, addr, box string) *statusJSON {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/api/mailboxes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var all []mailboxJSON
	if err := json.NewDecoder(resp.Body).Decode(&all); err != nil {
		t.Fatal(err)
	}
	for _, m := range all {
		if m.Name == box {
			return m.Status
		}
	}
	t.Fatalf("no mailbox %s in %+v", box, all)
	return nil
}

// A mailbox mirrored into a Dovecot account shows its sync status in the
// console (connected, then the lag growing while the server is down) and
// in /metrics; a mailbox that is not mirrored shows none.
func TestConsoleSyncStatus(t *testing.T) {
	d, err := dovecot.Start(dovecot.Options{Dir: t.TempDir(), Users: map[string]string{"alice": "alicepw"}})
	if err != nil {
		t.Fatalf("start Dovecot (Debian package dovecot-imapd): %v", err)
	}
	t.Cleanup(d.Stop)
	addr := freeAddr(t)
	u := url.URL{Scheme: "imaps", User: url.UserPassword("alice", "alicepw"), Host: d.TLSAddr}
	p := startPBX(t, buildPBX(t), t.TempDir(), "-user", "1001:secret1", "-user", "1002:secret2",
		"-upstream", "1001="+u.String(), "-upstream-ca", d.CertFile, "-http", addr)
	testwait.Until(t, wait, 50*time.Millisecond, "1001 connected upstream", func() bool {
		st := mailboxStatus(t, addr, "1001")
		return st != nil && st.Mode == "upstream" && st.Connected
	})
	if st := mailboxStatus(t, addr, "1002"); st != nil {
		t.Errorf("status of 1002, not mirrored = %+v, want none", st)
	}
	if got := value(t, scrape(t, addr), "um_upstream_connected", "mailbox=1001"); got != 1 {
		t.Errorf("um_upstream_connected{mailbox=1001} = %v, want 1", got)
	}

	bctx := browser(t)
	ctx, cancel := context.WithTimeout(bctx, wait)
	defer cancel()
	status := `section[data-box="1001"] .status[data-connected="true"]`
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+addr+"/"), chromedp.WaitVisible(chromedp.CSS(status))); err != nil {
		t.Fatalf("sync status on the page: %v", err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(status)))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "synced to a mail account: connected, lag 0.0 s") {
		t.Errorf("status on the page = %q, want it connected with no lag", text)
	}

	// The server goes away with a deposit not carried up: the lag grows.
	d.Stop()
	p.send("deposit 1001 5551234")
	p.expect("MWI 1001 on 1/0 (0/0)", "ok 1")
	testwait.Until(t, wait, 50*time.Millisecond, "1001's lag growing", func() bool {
		st := mailboxStatus(t, addr, "1001")
		return st != nil && !st.Connected && st.LagSeconds > 0
	})
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(`section[data-box="1001"] .status[data-connected="false"]`))); err != nil {
		t.Fatalf("the page did not show the lost connection: %v", err)
	}
	p.stdin.Close()
	p.waitExit()
}
