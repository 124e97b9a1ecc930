package imapserver

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/google/uuid"
)

// BenchmarkFetchHeaders fetches ENVELOPE FLAGS RFC822.SIZE of 1,000
// voicemails, with 1 KB and with 1 MB of audio each: the time must not
// depend on the audio, and no audio byte is read.
func BenchmarkFetchHeaders(b *testing.B) {
	for _, size := range []int{1 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("audio=%dKB", size>>10), func(b *testing.B) {
			e := newEnv(b, nil)
			mb := e.mailbox("1001")
			first := e.deposit("1001", "+4930123456", size)
			// Copies share the audio in memstore, so 1,000 messages of 1 MB
			// take 1 MB.
			ids := make([]uuid.UUID, 999)
			for i := range ids {
				ids[i] = first.ID
			}
			if _, err := mb.Copy(context.Background(), ids, um.Inbox); err != nil {
				b.Fatal(err)
			}
			c := e.dial("alice", nil)
			if _, err := c.Select("INBOX", nil).Wait(); err != nil {
				b.Fatal(err)
			}
			all := imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}
			opts := &imap.FetchOptions{Envelope: true, Flags: true, RFC822Size: true}
			e.store.read.Store(0)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				msgs, err := c.Fetch(all, opts).Collect()
				if err != nil {
					b.Fatal(err)
				}
				if len(msgs) != 1000 {
					b.Fatalf("fetched %d, want 1000", len(msgs))
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(e.store.read.Load()), "audio-bytes-read")
			if n := e.store.read.Load(); n != 0 {
				b.Fatalf("audio bytes read = %d, want 0", n)
			}
		})
	}
}

// fanout is 100 IDLE clients on one INBOX and a channel that gets one
// value per client per FETCH they are sent.
type fanout struct {
	e       *env
	got     chan time.Time
	idles   []*imapclient.IdleCommand
	mwi     chan time.Time
	clients int
}

func newFanout(b *testing.B, n int) *fanout {
	f := &fanout{got: make(chan time.Time, 100*n), mwi: make(chan time.Time, 1000), clients: n}
	f.e = newEnvWith(b, um.Options{}, func(o *Options) { o.MaxConnsPerUser = n + 10; o.MaxConnsPerIP = n + 10 })
	f.e.deposit("1001", "+1", 100)
	for i := 0; i < n; i++ {
		c := f.e.dial("alice", &imapclient.UnilateralDataHandler{
			Fetch: func(msg *imapclient.FetchMessageData) {
				msg.Collect()
				f.got <- time.Now()
			},
		})
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			b.Fatal(err)
		}
		idle, err := c.Idle()
		if err != nil {
			b.Fatal(err)
		}
		f.idles = append(f.idles, idle)
	}
	b.Cleanup(func() {
		for _, idle := range f.idles {
			idle.Close()
		}
	})
	return f
}

// wait returns how long after start the last of the clients got its FETCH.
func (f *fanout) wait(b *testing.B, start time.Time) time.Duration {
	var last time.Time
	for i := 0; i < f.clients; i++ {
		select {
		case t := <-f.got:
			if t.After(last) {
				last = t
			}
		case <-time.After(10 * time.Second):
			b.Fatalf("only %d of %d clients got the change", i, f.clients)
		}
	}
	return last.Sub(start)
}

func report(b *testing.B, name string, d []time.Duration) {
	if len(d) == 0 {
		return
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(d[(len(d)*99)/100].Microseconds())/1000, name+"-p99-ms")
}

// BenchmarkIdleFanoutClientStore: one client's STORE reaching 100 IDLE
// clients.
func BenchmarkIdleFanoutClientStore(b *testing.B) {
	f := newFanout(b, 100)
	actor := f.e.dial("alice", nil)
	if _, err := actor.Select("INBOX", nil).Wait(); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		op := imap.StoreFlagsAdd
		if i%2 == 1 {
			op = imap.StoreFlagsDel
		}
		start := time.Now()
		if err := actor.Store(imap.SeqSetNum(1), &imap.StoreFlags{Op: op, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}, nil).Close(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, f.wait(b, start))
	}
	b.StopTimer()
	report(b, "all100", lat)
}

// BenchmarkIdleFanoutPhone: a phone action (heard / unheard) reaching 100
// IDLE clients and the MWI hook.
func BenchmarkIdleFanoutPhone(b *testing.B) {
	f := newFanout(b, 100)
	mwi := make(chan time.Time, 16)
	// The env's MWI hook logs states; watch them through a wrapper.
	f.e.mwi.setNotify(mwi)
	mb := f.e.mailbox("1001")
	msg := f.e.list("1001", um.Inbox)[0]
	var lat, mwiLat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		var err error
		if i%2 == 0 {
			err = mb.MarkHeard(context.Background(), msg.ID)
		} else {
			err = mb.MarkUnheard(context.Background(), msg.ID)
		}
		if err != nil {
			b.Fatal(err)
		}
		select {
		case t := <-mwi:
			mwiLat = append(mwiLat, t.Sub(start))
		case <-time.After(10 * time.Second):
			b.Fatal("MWI hook not called")
		}
		lat = append(lat, f.wait(b, start))
	}
	b.StopTimer()
	report(b, "all100", lat)
	report(b, "mwi", mwiLat)
}
