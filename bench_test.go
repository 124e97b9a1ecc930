package um_test

import (
	"bytes"
	"sort"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
)

// BenchmarkMWILatency measures the time from a call-control change (a
// deposit or heard, alternating) to the MWI hook's call, and reports the
// median and 99th percentile.
func BenchmarkMWILatency(b *testing.B) {
	got := make(chan time.Time, 1)
	svc, _ := um.New(memstore.New(), &um.Options{MWI: func(um.MWIState) { got <- time.Now() }})
	defer svc.Close()
	mb, _ := svc.CreateMailbox(ctx, "1001")
	audio := recording(800)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		m, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(audio)})
		if err != nil {
			b.Fatal(err)
		}
		lat = append(lat, (<-got).Sub(start))
		start = time.Now()
		mb.MarkHeard(ctx, m.ID)
		lat = append(lat, (<-got).Sub(start))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkDepositMemstore measures one deposit of a 30-second G.711-sized
// WAV (about 240 KB) on memstore, with a subscriber and the MWI hook set.
func BenchmarkDepositMemstore(b *testing.B) {
	svc, _ := um.New(memstore.New(), &um.Options{MWI: func(um.MWIState) {}})
	defer svc.Close()
	sub := svc.Subscribe("", um.SubscribeOptions{MaxQueue: 1 << 30})
	defer sub.Close()
	mb, _ := svc.CreateMailbox(ctx, "1001")
	audio := recording(120000)
	b.SetBytes(int64(len(audio)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(audio), Duration: 30 * time.Second}); err != nil {
			b.Fatal(err)
		}
		if i%100 == 99 {
			sub.Next()
		}
	}
}
