package metrics

import (
	"context"
	"fmt"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/forward"
	"github.com/embeddedum/um/imapserver"
	"github.com/embeddedum/um/upstream"
	"github.com/prometheus/client_golang/prometheus"
)

// IMAPStats is what the IMAP collector reads at each scrape. IMAPServer
// makes it from an imapserver.Server; a host with a server of its own can
// fill it itself.
type IMAPStats struct {
	Conns         int    // connections open now
	Sessions      int    // logged-in sessions now
	LoginFailures uint64 // failed logins so far
	Rejected      uint64 // connections refused by the connection limits so far
	Overruns      uint64 // connections closed for passing the pre-login byte limit
	// Commands counts the commands run so far by name (upper case, "UID
	// FETCH" for the UID forms) and result ("OK", "NO", "BAD"). Nil when
	// the server does not count them.
	Commands map[Command]uint64
	// CacheHits and CacheMisses count lookups in the rendered-message
	// cache so far.
	CacheHits, CacheMisses uint64
}

// Command names an IMAP command and its result, for IMAPStats.Commands.
type Command struct{ Name, Result string }

// IMAPServer returns a reader of srv's Stats for RegisterIMAP.
func IMAPServer(srv interface{ Stats() imapserver.Stats }) func() IMAPStats {
	return func() IMAPStats {
		st := srv.Stats()
		out := IMAPStats{
			Conns: st.Conns, Sessions: st.Sessions,
			LoginFailures: st.LoginFailures, Rejected: st.Rejected, Overruns: st.Overruns,
			CacheHits: st.RenderCacheHits, CacheMisses: st.RenderCacheMisses,
		}
		if len(st.Commands) > 0 {
			out.Commands = make(map[Command]uint64, len(st.Commands))
			for k, n := range st.Commands {
				out.Commands[Command{Name: k.Name, Result: k.Result}] = n
			}
		}
		return out
	}
}

// RegisterIMAP registers, on the Metrics' Registerer, gauges and counters
// read from stats at each scrape: um_imap_connections, um_imap_sessions,
// um_imap_login_failures_total, um_imap_rejected_connections_total,
// um_imap_overruns_total, um_imap_commands_total{command,result} and
// um_imap_render_cache_{hits,misses}_total. stats must be quick and safe
// for concurrent use.
func (m *Metrics) RegisterIMAP(stats func() IMAPStats) error {
	return m.register(&imapCollector{stats: stats})
}

// RegisterUpstream registers gauges read from engine's Status for every
// mailbox of svc it syncs, at each scrape: um_upstream_connected{mailbox}
// (1 while connected), um_upstream_lag_seconds{mailbox} (how long the
// oldest change not carried over has waited), um_upstream_failures{mailbox}
// (failures since the last good sync), um_upstream_messages{mailbox}.
func (m *Metrics) RegisterUpstream(svc *um.Service, engine *upstream.Engine) error {
	return m.register(&upstreamCollector{svc: svc, status: engine.Status})
}

// RegisterForward registers gauges and counters read from f's Status for
// every mailbox of svc it forwards, at each scrape: um_forward_pending
// {mailbox} (1 while a message waits to be sent or retried),
// um_forward_queue (how many mailboxes have one waiting),
// um_forward_sent_total{mailbox} and um_forward_failed_total{mailbox}.
func (m *Metrics) RegisterForward(svc *um.Service, f *forward.Forwarder) error {
	return m.register(&forwardCollector{svc: svc, status: f.Status})
}

func (m *Metrics) register(c prometheus.Collector) error {
	if err := m.reg.Register(c); err != nil {
		return fmt.Errorf("metrics: register: %w", err)
	}
	return nil
}

// scrapeTimeout bounds the store reads of one scrape (listing mailboxes).
const scrapeTimeout = 5 * time.Second

var (
	imapConns      = prometheus.NewDesc("um_imap_connections", "IMAP connections open.", nil, nil)
	imapSessions   = prometheus.NewDesc("um_imap_sessions", "Logged-in IMAP sessions.", nil, nil)
	imapFailures   = prometheus.NewDesc("um_imap_login_failures_total", "Failed IMAP logins.", nil, nil)
	imapRejected   = prometheus.NewDesc("um_imap_rejected_connections_total", "IMAP connections refused by the connection limits.", nil, nil)
	imapOverruns   = prometheus.NewDesc("um_imap_overruns_total", "IMAP connections closed for passing the pre-login byte limit.", nil, nil)
	imapCommands   = prometheus.NewDesc("um_imap_commands_total", "IMAP commands run, by command and result.", []string{"command", "result"}, nil)
	imapCacheHits  = prometheus.NewDesc("um_imap_render_cache_hits_total", "Rendered-message cache hits.", nil, nil)
	imapCacheMiss  = prometheus.NewDesc("um_imap_render_cache_misses_total", "Rendered-message cache misses.", nil, nil)
	upConnected    = prometheus.NewDesc("um_upstream_connected", "1 while the mailbox's sync holds a connection to its mail server.", []string{"mailbox"}, nil)
	upLag          = prometheus.NewDesc("um_upstream_lag_seconds", "How long the oldest change not yet carried to the mail server has waited.", []string{"mailbox"}, nil)
	upFailures     = prometheus.NewDesc("um_upstream_failures", "Failed connections and sessions since the last good sync.", []string{"mailbox"}, nil)
	upMessages     = prometheus.NewDesc("um_upstream_messages", "Voicemails with an upstream copy.", []string{"mailbox"}, nil)
	fwPending      = prometheus.NewDesc("um_forward_pending", "1 while a voicemail of the mailbox waits to be sent or retried.", []string{"mailbox"}, nil)
	fwQueue        = prometheus.NewDesc("um_forward_queue", "Forwarded mailboxes with a voicemail waiting to be sent or retried.", nil, nil)
	fwSent         = prometheus.NewDesc("um_forward_sent_total", "Voicemails the SMTP server accepted.", []string{"mailbox"}, nil)
	fwFailed       = prometheus.NewDesc("um_forward_failed_total", "Voicemails given up after the SMTP server refused them.", []string{"mailbox"}, nil)
	scrapeFailures = prometheus.NewDesc("um_scrape_errors", "1 when this scrape could not list the mailboxes.", []string{"collector"}, nil)
)

type imapCollector struct{ stats func() IMAPStats }

func (c *imapCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{imapConns, imapSessions, imapFailures, imapRejected, imapOverruns, imapCommands, imapCacheHits, imapCacheMiss} {
		ch <- d
	}
}

func (c *imapCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	ch <- prometheus.MustNewConstMetric(imapConns, prometheus.GaugeValue, float64(st.Conns))
	ch <- prometheus.MustNewConstMetric(imapSessions, prometheus.GaugeValue, float64(st.Sessions))
	ch <- prometheus.MustNewConstMetric(imapFailures, prometheus.CounterValue, float64(st.LoginFailures))
	ch <- prometheus.MustNewConstMetric(imapRejected, prometheus.CounterValue, float64(st.Rejected))
	ch <- prometheus.MustNewConstMetric(imapOverruns, prometheus.CounterValue, float64(st.Overruns))
	for cmd, n := range st.Commands {
		ch <- prometheus.MustNewConstMetric(imapCommands, prometheus.CounterValue, float64(n), cmd.Name, cmd.Result)
	}
	ch <- prometheus.MustNewConstMetric(imapCacheHits, prometheus.CounterValue, float64(st.CacheHits))
	ch <- prometheus.MustNewConstMetric(imapCacheMiss, prometheus.CounterValue, float64(st.CacheMisses))
}

// mailboxes lists svc's mailboxes for a scrape; on failure it reports the
// failure as a metric and returns none.
func mailboxes(svc *um.Service, collector string, ch chan<- prometheus.Metric) []string {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	names, err := svc.Mailboxes(ctx)
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(scrapeFailures, prometheus.GaugeValue, failed, collector)
	return names
}

type upstreamCollector struct {
	svc    *um.Service
	status func(mailbox string) upstream.Status
}

func (c *upstreamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{upConnected, upLag, upFailures, upMessages, scrapeFailures} {
		ch <- d
	}
}

func (c *upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	for _, name := range mailboxes(c.svc, "upstream", ch) {
		st := c.status(name)
		if !st.Configured {
			continue
		}
		ch <- prometheus.MustNewConstMetric(upConnected, prometheus.GaugeValue, b2f(st.Connected), name)
		ch <- prometheus.MustNewConstMetric(upLag, prometheus.GaugeValue, st.Lag.Seconds(), name)
		ch <- prometheus.MustNewConstMetric(upFailures, prometheus.GaugeValue, float64(st.Failures), name)
		ch <- prometheus.MustNewConstMetric(upMessages, prometheus.GaugeValue, float64(st.Messages), name)
	}
}

type forwardCollector struct {
	svc    *um.Service
	status func(mailbox string) forward.Status
}

func (c *forwardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{fwPending, fwQueue, fwSent, fwFailed, scrapeFailures} {
		ch <- d
	}
}

func (c *forwardCollector) Collect(ch chan<- prometheus.Metric) {
	queue := 0
	for _, name := range mailboxes(c.svc, "forward", ch) {
		st := c.status(name)
		if !st.Configured {
			continue
		}
		if st.Pending {
			queue++
		}
		ch <- prometheus.MustNewConstMetric(fwPending, prometheus.GaugeValue, b2f(st.Pending), name)
		ch <- prometheus.MustNewConstMetric(fwSent, prometheus.CounterValue, float64(st.Sent), name)
		ch <- prometheus.MustNewConstMetric(fwFailed, prometheus.CounterValue, float64(st.Failed), name)
	}
	ch <- prometheus.MustNewConstMetric(fwQueue, prometheus.GaugeValue, float64(queue))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
