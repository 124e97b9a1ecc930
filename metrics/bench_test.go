package metrics_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/metrics"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkDeposit measures a deposit of a 3-second recording on memstore,
// with an MWI hook, plain and with the metrics on (the timed Store wrapper
// and the Observer), for what the metrics cost.
func BenchmarkDeposit(b *testing.B) {
	audio := wav.Silence(3 * time.Second)
	for _, timed := range []bool{false, true} {
		name := "plain"
		if timed {
			name = "metrics"
		}
		b.Run(name, func(b *testing.B) {
			var store um.Store = memstore.New()
			opts := &um.Options{MWI: func(um.MWIState) {}}
			if timed {
				m, err := metrics.New(prometheus.NewRegistry(), nil)
				if err != nil {
					b.Fatal(err)
				}
				store, opts.Observer = m.WrapStore(store), m
			}
			svc, _ := um.New(store, opts)
			defer svc.Close()
			mb, _ := svc.CreateMailbox(ctx, "1001")
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(audio), Duration: 3 * time.Second}); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			svc.FlushMWI()
		})
	}
}
