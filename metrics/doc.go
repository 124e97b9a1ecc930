// Package metrics exports um's Prometheus metrics: deposits, lamp changes
// and the MWI hook's latency (through um.Options.Observer), store operation
// latency (through a Store wrapper), and, read at each scrape from the
// Stats and Status the other packages keep, IMAP connections, sessions and
// login failures, upstream sync lag and connection state per mailbox, and
// the forwarding queue.
//
// Everything is registered on the prometheus.Registerer the host passes,
// never on the global one, so a host can run several services (or tests)
// in one process:
//
//	reg := prometheus.NewRegistry()
//	m, err := metrics.New(reg)
//	store = m.WrapStore(store)
//	svc, err := um.New(store, &um.Options{Observer: m})
//	err = m.RegisterIMAP(metrics.IMAPServer(srv))
//	err = m.RegisterUpstream(svc, engine)
//	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// # Names
//
// Every metric starts with um_. Labels are few and bounded: the store
// operation and its result, the lamp (on, off) and where its change was
// made (local, remote, unknown). Only the upstream and forwarding metrics,
// which exist for the mailboxes a host configured, carry a mailbox label.
package metrics
