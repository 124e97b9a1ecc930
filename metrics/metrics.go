package metrics

import (
	"fmt"
	"time"

	"github.com/embeddedum/um"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the metrics of one um.Service, registered on one
// Registerer. It implements um.Observer: set it as um.Options.Observer. It
// is safe for concurrent use.
type Metrics struct {
	reg      prometheus.Registerer
	node     string
	deposits *prometheus.CounterVec
	recorded prometheus.Counter
	lamps    *prometheus.CounterVec
	hook     prometheus.Histogram
	storeOps *prometheus.HistogramVec
}

var _ um.Observer = (*Metrics)(nil)

// Options tune the metrics. The zero value works.
type Options struct {
	// Node is the um.Options.Node of the service observed, to tell the
	// lamp changes made on this node (origin="local") from those made on
	// others (origin="remote"). Default "local", um's default.
	Node string
}

// New creates the metrics and registers them on reg. It fails when reg
// holds metrics of the same names already (a second New on one registry).
func New(reg prometheus.Registerer, opts *Options) (*Metrics, error) {
	if reg == nil {
		return nil, fmt.Errorf("metrics: %w: nil Registerer", um.ErrInvalid)
	}
	m := &Metrics{reg: reg, node: "local"}
	if opts != nil && opts.Node != "" {
		m.node = opts.Node
	}
	m.deposits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "um_deposits_total",
		Help: "Voicemail deposited, by urgency.",
	}, []string{"urgent"})
	m.recorded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "um_deposited_seconds_total",
		Help: "Summed duration of the voicemail deposited.",
	})
	m.lamps = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "um_mwi_calls_total",
		Help: "MWI hook calls (lamp changes and announcements), by lamp and where the change was made.",
	}, []string{"lamp", "origin"})
	m.hook = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "um_mwi_hook_duration_seconds",
		Help:    "Time the host's MWI hook took per call.",
		Buckets: []float64{.0001, .0005, .001, .005, .01, .05, .1, .5, 1, 5, 30},
	})
	m.storeOps = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "um_store_operation_duration_seconds",
		Help:    "Latency of store operations, by operation and result (ok, not_found, error).",
		Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
	}, []string{"op", "result"})
	for _, c := range []prometheus.Collector{m.deposits, m.recorded, m.lamps, m.hook, m.storeOps} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("metrics: register: %w", err)
		}
	}
	// Zero series exist from the start, so a rate() over a fresh PBX works.
	m.deposits.WithLabelValues("false")
	m.deposits.WithLabelValues("true")
	return m, nil
}

// Deposited counts a deposit. um calls it; see um.Observer.
func (m *Metrics) Deposited(mailbox string, msg um.Message) {
	m.deposits.WithLabelValues(fmt.Sprint(msg.Urgent)).Inc()
	m.recorded.Add(msg.Duration.Seconds())
}

// MWICalled counts an MWI hook call and its latency. um calls it; see
// um.Observer.
func (m *Metrics) MWICalled(st um.MWIState, took time.Duration) {
	lamp := "off"
	if st.Waiting() {
		lamp = "on"
	}
	origin := "remote"
	switch st.Node {
	case m.node:
		origin = "local"
	case "":
		origin = "unknown"
	}
	m.lamps.WithLabelValues(lamp, origin).Inc()
	m.hook.Observe(took.Seconds())
}
