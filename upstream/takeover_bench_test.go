package upstream_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// BenchmarkTakeover measures how long a mailbox's sync is without an owner
// when the owner dies: from the SIGKILL of the owning node (a child
// process, synced and idle) until another node has completed its first
// full sync of the mailbox, at a random moment of the owner's renewal
// cycle. Two other nodes wait for the lease; the lease time to live is
// clusterTTL. It reports the median and the 99th
// percentile over b.N kills.
func BenchmarkTakeover(b *testing.B) {
	defer slog.SetDefault(slog.Default())
	slog.SetDefault(slog.New(slog.DiscardHandler))
	d := startDovecot(b, "1001")
	dsn := newDatabase(b)
	n2, n3 := newNode(b, dsn, "n2"), newNode(b, dsn, "n3")
	mb, err := n2.svc.EnsureMailbox(context.Background(), "1001")
	if err != nil {
		b.Fatal(err)
	}
	deposit(b, mb, "1")
	var took []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for _, n := range []*node{n2, n3} {
			n.eng.Remove("1001") // the owner releases: the child takes the lease at once
		}
		ch := startChild(b, d, dsn, childConfig{Node: "n1"})
		<-ch.synced
		n2.add(b, d, "1001")
		n3.add(b, d, "1001")
		eventually(b, "n2 and n3 name n1 as the owner", func() bool {
			return n2.eng.Status("1001").Owner == "n1" && n3.eng.Status("1001").Owner == "n1"
		})
		// The kill comes at any moment of the owner's renewal cycle.
		time.Sleep(rand.N(clusterTTL / 3))
		b.StartTimer()
		killed := time.Now()
		ch.kill()
		for {
			if s := n2.eng.Status("1001"); s.Owning && s.LastSync.After(killed) {
				break
			}
			if s := n3.eng.Status("1001"); s.Owning && s.LastSync.After(killed) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		took = append(took, time.Since(killed))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(took[(len(took)*99)/100].Milliseconds()), "p99-ms")
	b.ReportMetric(clusterTTL.Seconds(), "ttl-s")
}
