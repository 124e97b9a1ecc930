package um_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
)

// BenchmarkMWIBlockedMailbox measures the time from a deposit into 1002
// to 1002's MWI hook call, with 1001's hook call blocked for the whole run
// (a NOTIFY to a dead phone) and without: the two should not differ.
func BenchmarkMWIBlockedMailbox(b *testing.B) {
	for _, blocked := range []bool{false, true} {
		name := "none-blocked"
		if blocked {
			name = "1001-blocked"
		}
		b.Run(name, func(b *testing.B) {
			release := make(chan struct{})
			got := make(chan time.Time, 1)
			svc, _ := um.New(memstore.New(), &um.Options{MWI: func(s um.MWIState) {
				if s.Mailbox == "1001" {
					<-release
					return
				}
				got <- time.Now()
			}})
			defer svc.Close()
			defer close(release)
			if blocked {
				depositInto(b, svc, "1001")
			}
			mb, _ := svc.CreateMailbox(ctx, "1002")
			audio := recording(800)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(audio)}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, (<-got).Sub(start))
			}
			b.StopTimer()
			reportPercentiles(b, lat)
		})
	}
}
