package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/forward"
	"github.com/embeddedum/um/imapserver"
	"github.com/embeddedum/um/internal/selfsigned"
	"github.com/embeddedum/um/internal/testwait"
	"github.com/embeddedum/um/metrics"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/upstream"
	"github.com/embeddedum/um/wav"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var ctx = context.Background()

// values gathers reg and returns every sample of the family name as
// "label=value,... value" strings, sorted; histograms give their count.
func values(t testing.TB, reg *prometheus.Registry, name string) []string {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather() = %v", err)
	}
	var out []string
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out = append(out, strings.Join(labels, ",")+" "+sample(f.GetType(), m))
		}
	}
	sort.Strings(out)
	return out
}

func sample(typ dto.MetricType, m *dto.Metric) string {
	switch typ {
	case dto.MetricType_COUNTER:
		return fmt.Sprint(m.GetCounter().GetValue())
	case dto.MetricType_GAUGE:
		return fmt.Sprint(m.GetGauge().GetValue())
	case dto.MetricType_HISTOGRAM:
		return fmt.Sprintf("count=%d", m.GetHistogram().GetSampleCount())
	}
	return "?"
}

func expect(t testing.TB, reg *prometheus.Registry, name string, want ...string) {
	t.Helper()
	if got := values(t, reg, name); strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("%s = %q, want %q", name, got, want)
	}
}

// newService returns a service over a timed memstore, observed by the
// metrics, registered on a registry of its own.
func newService(t testing.TB, mwi um.MWIFunc) (*prometheus.Registry, *metrics.Metrics, *um.Service) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, &metrics.Options{Node: "a"})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := um.New(m.WrapStore(memstore.New()), &um.Options{Node: "a", Observer: m, MWI: mwi})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return reg, m, svc
}

func TestDepositsLampsAndHookLatency(t *testing.T) {
	reg, _, svc := newService(t, func(um.MWIState) { time.Sleep(2 * time.Millisecond) })
	mb, err := svc.CreateMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	for _, urgent := range []bool{false, true} {
		if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(2 * time.Second)), Duration: 2 * time.Second, Urgent: urgent}); err != nil {
			t.Fatal(err)
		}
		svc.FlushMWI()
	}
	msgs, _ := mb.List(ctx, um.Inbox)
	if err := mb.MarkHeard(ctx, msgs[0].ID, msgs[1].ID); err != nil {
		t.Fatal(err)
	}
	svc.FlushMWI()
	expect(t, reg, "um_deposits_total", "urgent=false 1", "urgent=true 1")
	expect(t, reg, "um_deposited_seconds_total", " 4")
	expect(t, reg, "um_mwi_calls_total", "lamp=off,origin=local 1", "lamp=on,origin=local 2")
	expect(t, reg, "um_mwi_hook_duration_seconds", " count=3")
	fams, _ := reg.Gather()
	for _, f := range fams {
		if f.GetName() == "um_mwi_hook_duration_seconds" {
			if sum := f.GetMetric()[0].GetHistogram().GetSampleSum(); sum < 0.006 {
				t.Errorf("hook latency sum = %vs, want at least the 3 × 2ms the hook slept", sum)
			}
		}
	}
}

// The store wrapper times each operation by its result, and exposes the
// store it wraps.
func TestStoreOperations(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	inner := memstore.New()
	store := m.WrapStore(inner)
	if store.Unwrap() != um.Store(inner) {
		t.Errorf("Unwrap() = %v, want the wrapped store", store.Unwrap())
	}
	if err := store.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(ctx, "1001", uuid.New()); !errors.Is(err, um.ErrNotFound) {
		t.Fatalf("Get(unknown) = %v, want ErrNotFound", err)
	}
	if _, err := store.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox}, bytes.NewReader(wav.Silence(time.Second))); err != nil {
		t.Fatal(err)
	}
	expect(t, reg, "um_store_operation_duration_seconds",
		"op=append,result=ok count=1", "op=create_mailbox,result=ok count=1", "op=get,result=not_found count=1")
}

func TestNewRefusesASecondRegistrationAndNil(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := metrics.New(reg, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := metrics.New(reg, nil); err == nil {
		t.Error("second New on one registry = nil error, want the duplicate refused")
	}
	if _, err := metrics.New(nil, nil); !errors.Is(err, um.ErrInvalid) {
		t.Errorf("New(nil) = %v, want ErrInvalid", err)
	}
}

// A real IMAP server: an open connection and a failed login show at the
// next scrape.
func TestIMAPStats(t *testing.T) {
	reg, m, svc := newService(t, nil)
	cert, err := selfsigned.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := imapserver.New(svc, &imapserver.Options{
		TLSConfig:         cert.ServerConfig(),
		LoginFailureDelay: time.Millisecond,
		Authenticate: func(ctx context.Context, user, pass string) (string, error) {
			return "", errors.New("wrong PIN")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeTLS(ln)
	defer srv.Close()
	if err := m.RegisterIMAP(metrics.IMAPServer(srv)); err != nil {
		t.Fatal(err)
	}
	c, err := imapclient.DialTLS(ln.Addr().String(), &imapclient.Options{TLSConfig: cert.ClientConfig("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("1001", "0000").Wait(); err == nil {
		t.Fatal("login with a wrong PIN succeeded")
	}
	expect(t, reg, "um_imap_connections", " 1")
	expect(t, reg, "um_imap_sessions", " 0")
	expect(t, reg, "um_imap_login_failures_total", " 1")
}

// A mailbox whose mail server does not answer shows as not connected, with
// its failures counted; a mailbox the engine does not sync has no series.
func TestUpstreamStatus(t *testing.T) {
	reg, m, svc := newService(t, nil)
	for _, box := range []string{"1001", "1002"} {
		if _, err := svc.CreateMailbox(ctx, box); err != nil {
			t.Fatal(err)
		}
	}
	state, err := upstream.NewFileState(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	engine, err := upstream.New(svc, state, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Close()
	if err := engine.Add(ctx, upstream.Config{Mailbox: "1001", Addr: closedAddr(t), Username: "bob", Credentials: upstream.Password("x")}); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterUpstream(svc, engine); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, 10*time.Millisecond, "a failed connection", func() bool { return engine.Status("1001").Failures > 0 })
	expect(t, reg, "um_upstream_connected", "mailbox=1001 0")
	if got := values(t, reg, "um_upstream_failures"); len(got) != 1 || got[0] == "mailbox=1001 0" {
		t.Errorf("um_upstream_failures = %q, want one series above 0 for 1001", got)
	}
	// The first sync has not happened: the lag grows through the outage.
	if got := values(t, reg, "um_upstream_lag_seconds"); len(got) != 1 || !strings.HasPrefix(got[0], "mailbox=1001 ") || got[0] == "mailbox=1001 0" {
		t.Errorf("um_upstream_lag_seconds = %q, want one series above 0 for 1001", got)
	}
}

// A voicemail the SMTP server cannot take waits in the forwarding queue.
func TestForwardQueue(t *testing.T) {
	reg, m, svc := newService(t, nil)
	mb, err := svc.CreateMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	fw, err := forward.New(svc, forward.Options{Addr: closedAddr(t), From: "pbx@example.com", MinBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterForward(svc, fw); err != nil {
		t.Fatal(err)
	}
	expect(t, reg, "um_forward_queue", " 0")
	if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(time.Second))}); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, 10*time.Millisecond, "the deposit pending", func() bool { return fw.Status("1001").Pending })
	expect(t, reg, "um_forward_queue", " 1")
	expect(t, reg, "um_forward_pending", "mailbox=1001 1")
	expect(t, reg, "um_forward_sent_total", "mailbox=1001 0")
}

// closedAddr returns a loopback address where nothing listens.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
