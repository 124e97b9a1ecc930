package upstream_test

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/upstream"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

func reportPercentiles(b *testing.B, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(ds[len(ds)/2]), "p50-ms")
	b.ReportMetric(ms(ds[(len(ds)*99)/100]), "p99-ms")
	b.ReportMetric(ms(ds[len(ds)-1]), "max-ms")
}

// idleClient connects another mail client of user that idles on INBOX and
// hands what the server announces to h, as a phone's display would.
func idleClient(b *testing.B, d *dovecot.Server, user string, h *imapclient.UnilateralDataHandler) {
	b.Helper()
	c := dialUser(b, d, user, h)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		b.Fatal(err)
	}
	ic, err := c.Idle()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ic.Close() })
}

// BenchmarkDepositVisible measures from Mailbox.Deposit returning to the
// copy being found on the server by another client (UID SEARCH HEADER in a
// loop, about 1 ms a round).
func BenchmarkDepositVisible(b *testing.B) {
	d := startDovecot(b, "1001")
	e := newEnv(b, d)
	mb := e.sync("1001", "")
	mc := newMailClient(b, d, "1001")
	mc.sel("INBOX")
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		m := deposit(b, mb, "bench")
		for {
			sd, err := mc.c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "X-Um-Message-Id", Value: m.ID.String()}}}, nil).Wait()
			if err != nil {
				b.Fatal(err)
			}
			if len(sd.AllUIDs()) > 0 {
				break
			}
			if time.Since(t0) > 10*time.Second {
				b.Fatal("deposit not visible after 10s")
			}
		}
		ds = append(ds, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, ds)
}

// BenchmarkDovecotIdleBaseline measures what the server alone costs: one
// client stores \Seen, another one idling on the folder is told. The
// difference to BenchmarkSeenToMWI is the engine's share.
func BenchmarkDovecotIdleBaseline(b *testing.B) {
	d := startDovecot(b, "1001")
	mc := newMailClient(b, d, "1001")
	for i := 0; i < b.N; i++ {
		mc.appendMail("INBOX", "m")
	}
	seen := make(chan struct{}, 1)
	idleClient(b, d, "1001", &imapclient.UnilateralDataHandler{
		Fetch: func(m *imapclient.FetchMessageData) {
			m.Collect()
			select {
			case seen <- struct{}{}:
			default:
			}
		},
	})
	mc.sel("INBOX")
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := mc.c.Store(imap.SeqSetNum(uint32(i+1)), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close(); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		select {
		case <-seen:
		case <-time.After(10 * time.Second):
			b.Fatal("no FETCH after 10s")
		}
		ds = append(ds, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, ds)
}

// BenchmarkSeenToMWI measures from another IMAP client's UID STORE +FLAGS
// \Seen being acknowledged to the MWI hook being called with the lamp's new
// state.
func BenchmarkSeenToMWI(b *testing.B) {
	d := startDovecot(b, "1001")
	lamp := make(chan um.MWIState, 100)
	e := newEnvHook(b, d, func(s um.MWIState) { lamp <- s })
	mb := e.sync("1001", "")
	seenToMWI(b, e, mb, newMailClient(b, d, "1001"), lamp, 10*time.Second)
}

// seenToMWI deposits a voicemail per iteration, waits until it is synced,
// and times from the user's client's acknowledged UID STORE +FLAGS \Seen
// on its copy until lamp reports no new message.
func seenToMWI(b *testing.B, e *env, mb *um.Mailbox, mc *mailClient, lamp chan um.MWIState, timeout time.Duration) {
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		m := deposit(b, mb, "bench")
		var uids []imap.UID
		for len(uids) == 0 {
			uids = mc.find("INBOX", m.ID)
		}
		e.waitSynced("1001")
		e.svc.FlushMWI()
		for len(lamp) > 0 {
			<-lamp
		}
		b.StartTimer()
		mc.store("INBOX", uids[0], imap.StoreFlagsAdd, imap.FlagSeen)
		t0 := time.Now()
	wait:
		for {
			select {
			case s := <-lamp:
				if s.New == 0 {
					break wait
				}
			case <-time.After(timeout):
				b.Fatalf("lamp not updated after %v", timeout)
			}
		}
		ds = append(ds, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, ds)
}

// BenchmarkManyMailboxes syncs many mailboxes to one Dovecot, then kills
// it, deposits one voicemail per mailbox during the outage and restarts
// it: time to the first sync of all, connections, memory, and catch-up.
func BenchmarkManyMailboxes(b *testing.B) {
	for _, n := range []int{100, 500, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				manyMailboxes(b, n)
			}
		})
	}
}

func manyMailboxes(b *testing.B, n int) {
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprint(2000 + i)
	}
	d := startDovecot(b, users...)
	e := newEnv(b, d)
	ctx := context.Background()
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	g0 := runtime.NumGoroutine()
	mbs := make([]*um.Mailbox, n)
	t0 := time.Now()
	for i, u := range users {
		mb, err := e.svc.EnsureMailbox(ctx, u)
		if err != nil {
			b.Fatal(err)
		}
		mbs[i] = mb
		if err := e.eng.Add(ctx, e.config(u, "")); err != nil {
			b.Fatal(err)
		}
	}
	waitAll := func() {
		for _, u := range users {
			eventually(b, "synced "+u, func() bool {
				s := e.eng.Status(u)
				return s.Connected && s.Lag == 0
			})
		}
	}
	waitAll()
	b.ReportMetric(time.Since(t0).Seconds(), "first-sync-s")
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	connected := 0
	for _, u := range users {
		if e.eng.Status(u).Connected {
			connected++
		}
	}
	b.ReportMetric(float64(connected), "connections")
	b.ReportMetric(float64(int64(m1.HeapInuse)-int64(m0.HeapInuse))/float64(n)/1024, "heap-KiB/mailbox")
	b.ReportMetric(float64(runtime.NumGoroutine()-g0)/float64(n), "goroutines/mailbox")

	d.Kill()
	for _, u := range users {
		eventually(b, "disconnect "+u, func() bool { return !e.eng.Status(u).Connected })
	}
	for _, mb := range mbs {
		deposit(b, mb, "outage")
	}
	t1 := time.Now()
	if err := d.Restart(); err != nil {
		b.Fatal(err)
	}
	waitAll()
	b.ReportMetric(time.Since(t1).Seconds(), "catch-up-s")
	e.eng.Close()
}

// outageFlag is how long BenchmarkOutageCatchUp keeps Dovecot down.
var outageFlag = flag.Duration("outage", 10*time.Second, "how long BenchmarkOutageCatchUp keeps the server down")

// BenchmarkOutageCatchUp syncs 1,000 mailboxes to one Dovecot with the
// engine's default backoffs (1 s doubling to 5 min), kills Dovecot for
// 10 s (-outage), deposits one voicemail per mailbox meanwhile, restarts it and
// measures from the restart until each mailbox is connected with nothing
// left to carry over. "shared" is the engine as it is (one prober per
// address wakes the others); "solo" gives each worker its own backoff
// only, as before.
func BenchmarkOutageCatchUp(b *testing.B) {
	for _, mode := range []string{"shared", "solo"} {
		b.Run(mode, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				outageCatchUp(b, 1000, *outageFlag, mode == "solo")
			}
		})
	}
}

func outageCatchUp(b *testing.B, n int, outage time.Duration, solo bool) {
	users := make([]string, n)
	pw := make(map[string]string, n)
	for i := range users {
		users[i] = fmt.Sprint(3000 + i)
		pw[users[i]] = "pass" + users[i]
	}
	d, err := dovecot.Start(dovecot.Options{Dir: b.TempDir(), Users: pw, HighPerformance: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(d.Stop)
	e := newEnvOpts(b, d, upstream.Options{}, nil)
	if solo {
		upstream.SetSolo(e.eng)
	}
	ctx := context.Background()
	mbs := make([]*um.Mailbox, n)
	for i, u := range users {
		mb, err := e.svc.EnsureMailbox(ctx, u)
		if err != nil {
			b.Fatal(err)
		}
		mbs[i] = mb
		if err := e.eng.Add(ctx, e.config(u, "")); err != nil {
			b.Fatal(err)
		}
	}
	// caughtUp polls every mailbox until each is connected and in sync,
	// returning how long each took from t0.
	caughtUp := func(t0 time.Time, limit time.Duration) []time.Duration {
		done := make([]time.Duration, n)
		left := n
		for left > 0 {
			for i, u := range users {
				if done[i] != 0 {
					continue
				}
				if s := e.eng.Status(u); s.Connected && s.Lag == 0 {
					done[i] = time.Since(t0)
					left--
				}
			}
			if time.Since(t0) > limit {
				b.Fatalf("%d of %d mailboxes not in sync after %v", left, n, limit)
			}
			time.Sleep(10 * time.Millisecond)
		}
		return done
	}
	caughtUp(time.Now(), 5*time.Minute)

	t0 := time.Now()
	d.Kill()
	for _, u := range users {
		eventually(b, "disconnect "+u, func() bool { return !e.eng.Status(u).Connected })
	}
	for _, mb := range mbs {
		deposit(b, mb, "outage")
	}
	time.Sleep(time.Until(t0.Add(outage)))
	attempts := 0
	for _, u := range users {
		attempts += e.eng.Status(u).Failures
	}
	b.ReportMetric(float64(attempts)/float64(n), "failures/mailbox")
	t1 := time.Now()
	if err := d.Restart(); err != nil {
		b.Fatal(err)
	}
	ds := caughtUp(t1, 10*time.Minute)
	slices.Sort(ds)
	b.ReportMetric(ds[len(ds)/2].Seconds(), "catch-up-p50-s")
	b.ReportMetric(ds[len(ds)*99/100].Seconds(), "catch-up-p99-s")
	b.ReportMetric(ds[len(ds)-1].Seconds(), "catch-up-all-s")
	e.eng.Close()
}
