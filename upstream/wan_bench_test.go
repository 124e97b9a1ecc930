package upstream_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/wanproxy"
	"github.com/embeddedum/um/upstream"
	"github.com/embeddedum/um/wav"
)

// wanEnv is an engine that reaches its Dovecot through a proxy adding
// 100 ms each way, as a hosted server far away; the user's client talks to
// Dovecot directly.
func wanEnv(b *testing.B, hook func(um.MWIState)) (*env, *mailClient, *um.Mailbox, *wanproxy.Proxy) {
	return wanEnvMode(b, hook, false)
}

// wanEnvMode is wanEnv with pipelining off when sequential.
func wanEnvMode(b *testing.B, hook func(um.MWIState), sequential bool) (*env, *mailClient, *um.Mailbox, *wanproxy.Proxy) {
	d := startDovecot(b, "1001")
	px, err := wanproxy.Start(d.TLSAddr, wanproxy.Options{Latency: 100 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { px.Close() })
	e := newEnvHook(b, d, hook)
	if sequential {
		upstream.SetSequential(e.eng)
	}
	ctx := context.Background()
	mb, err := e.svc.EnsureMailbox(ctx, "1001")
	if err != nil {
		b.Fatal(err)
	}
	cfg := e.config("1001", "")
	cfg.Addr, cfg.Security = px.Addr, upstream.ImplicitTLS
	if err := e.eng.Add(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	e.waitSynced("1001")
	return e, newMailClient(b, d, "1001"), mb, px
}

// BenchmarkWANDepositVisible measures, through 100 ms each way, from
// Mailbox.Deposit returning to the copy being found on the server: a
// short voicemail (2 KiB rendered, under go-imap's 4 KiB threshold for
// non-synchronizing literals) and one of 30 seconds (640 KiB).
func BenchmarkWANDepositVisible(b *testing.B) {
	for _, mode := range []string{"pipelined", "sequential"} {
		for _, audio := range []time.Duration{50 * time.Millisecond, 30 * time.Second} {
			b.Run(mode+"/"+audio.String(), func(b *testing.B) { wanDepositVisible(b, mode == "sequential", audio) })
		}
	}
}

func wanDepositVisible(b *testing.B, sequential bool, audio time.Duration) {
	_, mc, mb, _ := wanEnvMode(b, nil, sequential)
	mc.sel("INBOX")
	tone := wav.Tone(audio)
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		m, err := mb.Deposit(context.Background(), um.Deposit{Audio: bytes.NewReader(tone), CallerNumber: "bench", Duration: audio})
		if err != nil {
			b.Fatal(err)
		}
		for len(mc.find("INBOX", m.ID)) == 0 {
			if time.Since(t0) > 20*time.Second {
				b.Fatal("deposit not visible after 20s")
			}
		}
		ds = append(ds, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, ds)
}

// BenchmarkWANSeenToMWI measures, through 100 ms each way, from the user's
// client's UID STORE +FLAGS \Seen to the MWI hook turning the lamp off.
func BenchmarkWANSeenToMWI(b *testing.B) {
	lamp := make(chan um.MWIState, 100)
	e, mc, mb, _ := wanEnv(b, func(s um.MWIState) { lamp <- s })
	seenToMWI(b, e, mb, mc, lamp, 20*time.Second)
}

// BenchmarkWANCatchUp kills the server, deposits 20 voicemails and changes
// the heard state of 20 others meanwhile, and measures from the server's
// restart until both sides agree; pipelined (the default) and sequential.
func BenchmarkWANCatchUp(b *testing.B) {
	for _, mode := range []string{"pipelined", "sequential"} {
		b.Run(mode, func(b *testing.B) { wanCatchUp(b, mode == "sequential") })
	}
}

func wanCatchUp(b *testing.B, sequential bool) {
	e, mc, mb, _ := wanEnvMode(b, nil, sequential)
	ctx := context.Background()
	var old []um.Message
	for range 20 {
		old = append(old, deposit(b, mb, "old"))
	}
	e.waitSynced("1001")
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e.d.Kill()
		eventually(b, "disconnect", func() bool { return !e.eng.Status("1001").Connected })
		var ids []um.Message
		for range 20 {
			ids = append(ids, deposit(b, mb, "outage"))
		}
		for _, m := range old {
			if i%2 == 0 {
				mb.MarkHeard(ctx, m.ID)
			} else {
				mb.MarkUnheard(ctx, m.ID)
			}
		}
		b.StartTimer()
		t0 := time.Now()
		if err := e.d.Restart(); err != nil {
			b.Fatal(err)
		}
		for {
			if s := e.eng.Status("1001"); s.Connected && s.Lag == 0 {
				break
			}
			if time.Since(t0) > time.Minute {
				b.Fatal("not caught up after a minute")
			}
			time.Sleep(5 * time.Millisecond)
		}
		ds = append(ds, time.Since(t0))
		b.StopTimer()
		mc = newMailClient(b, e.d, "1001")
		for _, m := range ids {
			if n := len(mc.find("INBOX", m.ID)); n != 1 {
				b.Fatalf("copies of a deposit made during the outage = %d, want 1", n)
			}
		}
	}
	reportPercentiles(b, ds)
}
