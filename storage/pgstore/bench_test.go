package pgstore_test

import (
	"bytes"
	"context"
	"slices"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// reportLatencies reports the median and 99th percentile of d.
func reportLatencies(b *testing.B, prefix string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds()), prefix+"-p50-µs")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds()), prefix+"-p99-µs")
}

// BenchmarkCrossNode measures how long a change made on node A takes to
// reach a subscriber on node B: "total" from the call on A, "feed" from its
// return (after commit) to B's subscriber.
func BenchmarkCrossNode(b *testing.B) {
	ctx := context.Background()
	dsn := newDatabase(b)
	na, nb := startNode(b, dsn, "A"), startNode(b, dsn, "B")
	mbA := mailbox(b, na, "1001")
	sub := nb.svc.Subscribe("1001", um.SubscribeOptions{})
	defer sub.Close()
	audio := wav(8000) // one second of G.711

	wait := func(kind um.EventKind, id uuid.UUID) {
		waitFor(b, sub, "the change from A", hasEvent(kind, id))
	}

	b.Run("Deposit", func(b *testing.B) {
		var total, feed []time.Duration
		for b.Loop() {
			start := time.Now()
			m, err := mbA.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(audio), Duration: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			committed := time.Now()
			wait(um.EventAdded, m.ID)
			total = append(total, time.Since(start))
			feed = append(feed, time.Since(committed))
		}
		reportLatencies(b, "total", total)
		reportLatencies(b, "feed", feed)
	})

	b.Run("MarkHeard", func(b *testing.B) {
		m, err := mbA.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(audio)})
		if err != nil {
			b.Fatal(err)
		}
		wait(um.EventAdded, m.ID)
		var total, feed []time.Duration
		heard := false
		for b.Loop() {
			op := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}
			if heard {
				op.Mode = um.FlagsRemove
			}
			heard = !heard
			start := time.Now()
			if _, err := mbA.SetFlags(ctx, []uuid.UUID{m.ID}, op); err != nil {
				b.Fatal(err)
			}
			committed := time.Now()
			wait(um.EventFlags, m.ID)
			total = append(total, time.Since(start))
			feed = append(feed, time.Since(committed))
		}
		reportLatencies(b, "total", total)
		reportLatencies(b, "feed", feed)
	})

	b.Run("DepositToIdleClient", func(b *testing.B) {
		mb2 := mailbox(b, na, "1002")
		mailbox(b, nb, "1002")
		_, _, exists, _ := idleClient(b, serveIMAP(b, nb, "1002"))
		var total []time.Duration
		var n uint32
		for b.Loop() {
			start := time.Now()
			if _, err := mb2.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(audio), Duration: time.Second}); err != nil {
				b.Fatal(err)
			}
			n++
			waitExists(b, exists, n)
			total = append(total, time.Since(start))
		}
		reportLatencies(b, "total", total)
	})
}
