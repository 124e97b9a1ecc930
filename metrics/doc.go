// Package metrics exports um's Prometheus metrics: deposits, lamp changes
// and the MWI hook's latency (through um.Options.Observer), store operation
// latency (through a Store wrapper), and, read at each scrape from the
// Stats and Status the other packages keep, IMAP connections, sessions and
// login failures, commands by name and result, upstream sync lag and connection state per mailbox, and
// the forwarding queue.
//
// Everything is registered on the prometheus.Registerer the host passes,
// never on the global one, so a host can run several services (or tests)
// in one process:
//
//	reg := prometheus.NewRegistry()
//	m, err := metrics.New(reg, &metrics.Options{Node: "pbx-a"})
//	svc, err := um.New(m.WrapStore(store), &um.Options{Node: "pbx-a", Observer: m})
//	err = m.RegisterIMAP(metrics.IMAPServer(srv))
//	err = m.RegisterUpstream(svc, engine) // and RegisterForward(svc, forwarder)
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// It is a module of its own (github.com/embeddedum/um/metrics), so that um's
// module needs neither Prometheus nor the Go release it requires.
//
// # Names
//
// Every metric starts with um_. Labels are few and bounded: the store
// operation and its result, the lamp (on, off) and where its change was
// made (local, remote, unknown). Only the upstream and forwarding metrics,
// which exist for the mailboxes a host configured, carry a mailbox label.
package metrics
