package pgstore_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um"
)

// BenchmarkThreeNodeDeposits measures the deposit rate of three nodes (three
// Services on three Stores) on one database, 8 KB deposits from 4
// goroutines per node, into one mailbox (every deposit takes that mailbox's
// row: ModSeq and limit) or spread over 30, with and without limits (which
// pgstore checks inside each deposit's transaction).
func BenchmarkThreeNodeDeposits(b *testing.B) {
	for _, boxes := range []int{1, 30} {
		for _, limited := range []bool{false, true} {
			b.Run(fmt.Sprintf("mailboxes=%d/limits=%v", boxes, limited), func(b *testing.B) {
				ctx := context.Background()
				dsn := newDatabase(b)
				var opts um.Options
				if limited {
					opts.MaxMessages = 1 << 30
					opts.MaxRecordedTime = 1 << 60
				}
				var nodes []*um.Service
				for _, name := range []string{"A", "B", "C"} {
					nodes = append(nodes, limitedNode(b, dsn, name, opts))
				}
				var names []string
				for i := range boxes {
					names = append(names, fmt.Sprint(2000+i))
					if _, err := nodes[0].CreateMailbox(ctx, names[i]); err != nil {
						b.Fatal(err)
					}
				}
				audio := wav(8000)
				var next atomic.Int64
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for _, svc := range nodes {
					for range 4 {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for {
								n := next.Add(1)
								if n > int64(b.N) {
									return
								}
								mb, err := svc.Mailbox(ctx, names[int(n)%len(names)])
								if err == nil {
									_, err = mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(audio), Duration: time.Second})
								}
								if err != nil {
									b.Error(err)
									return
								}
							}
						}()
					}
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deposits/s")
			})
		}
	}
}
