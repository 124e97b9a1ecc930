package forward_test

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkTakeover measures how long forwarding stops when the owner of a
// mailbox's forwarding dies: from its SIGKILL to the SMTP server's
// receipt of a voicemail deposited on another node at that moment. It is
// bounded by the lease's time to live (clusterTTL) plus the other node's
// wait between requests for the lease (a third of it); one trial per
// iteration, so run it with -benchtime=20x or so.
func BenchmarkTakeover(b *testing.B) {
	var took []time.Duration
	for b.Loop() {
		dsn := newDatabase(b)
		srv := startSMTP(b)
		nb := startNode(b, dsn, "b", srv)
		mb := nb.mailbox(b)
		a := startChild(b, dsn, "a", srv)
		nb.add(b)
		ownerIs(b, "a", nb)
		start := time.Now()
		a.kill()
		m := (&fixture{}).deposit(b, mb, "after the kill")
		for {
			ids := srv.ids(b)
			if len(ids) > 0 && ids[len(ids)-1] == m.ID.String() {
				break
			}
			if time.Since(start) > 10*clusterTTL {
				b.Fatalf("no takeover within %v", 10*clusterTTL)
			}
			time.Sleep(5 * time.Millisecond)
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	pct := func(p float64) float64 {
		return float64(took[min(len(took)-1, int(p*float64(len(took))))].Milliseconds())
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(clusterTTL.Milliseconds()), "ttl-ms")
}
