package sipmwi_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/embeddedum/um"
)

// BenchmarkNotifyLatency measures the time from a lamp change (Update) to
// the moment every live subscriber of the mailbox has received its NOTIFY,
// over UDP on loopback, with and without a dead subscriber (a phone that
// reads and never answers, whose NOTIFY is retransmitted until the
// 32-second timeout) on the same mailbox.
func BenchmarkNotifyLatency(b *testing.B) {
	for _, dead := range []int{0, 1} {
		b.Run(fmt.Sprintf("live=8/dead=%d", dead), func(b *testing.B) {
			p := newPBX(b, nil)
			var live []*phone
			for range 8 {
				ph := newPhone(b, false)
				if res := ph.subscribe(b, p.udp, "1001"); res.StatusCode != 200 {
					b.Fatalf("SUBSCRIBE answered %d", res.StatusCode)
				}
				ph.next(b)
				live = append(live, ph)
			}
			for range dead {
				if res := newPhone(b, true).subscribe(b, p.udp, "1001"); res.StatusCode != 200 {
					b.Fatalf("SUBSCRIBE answered %d", res.StatusCode)
				}
			}
			b.ResetTimer()
			for i := range b.N {
				p.srv.Update(um.MWIState{Mailbox: "1001", New: i%2 + 1})
				for _, ph := range live {
					select {
					case <-ph.arrived:
					case <-time.After(10 * time.Second):
						b.Fatal("a live phone got no NOTIFY within 10s")
					}
				}
			}
			b.StopTimer()
			if got := p.srv.Subscriptions("1001"); got != 8+dead {
				b.Errorf("Subscriptions(1001) = %d at the end, want %d (the dead phone's NOTIFY has not timed out yet)", got, 8+dead)
			}
		})
	}
}
