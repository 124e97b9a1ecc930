package main

import (
	"fmt"
	"io"
	"time"
)

// Report writes what a run measured.
func Report(w io.Writer, r *Result) {
	fmt.Fprintf(w, "%d TLS connections idling (of %d; %d failed, %d broke) on %d mailboxes, %d voicemails each; set up in %v, %.1f ms of server CPU each\n",
		r.Idling, r.Conns, r.Failed, r.Broken, r.Mailboxes, r.Messages, r.SetUp.Round(time.Second), 1000*r.SetUpCPU.Seconds()/float64(max(r.Idling, 1)))
	if r.Limit != "" {
		fmt.Fprintf(w, "capped by %s\n", r.Limit)
	}
	if r.FirstErr != "" {
		fmt.Fprintf(w, "first error: %s\n", r.FirstErr)
	}
	n := int64(max(r.Idling, 1))
	fmt.Fprintf(w, "server memory: VmRSS %.1f MiB (%.1f before the clients), PSS %.1f MiB (%.1f before)\n",
		mib(r.RSS), mib(r.RSSBase), mib(r.PSS), mib(r.PSSBase))
	fmt.Fprintf(w, "per connection: VmRSS %.1f KiB, PSS %.1f KiB above the base; total VmRSS / connections %.1f KiB\n",
		kib((r.RSS-r.RSSBase)/n), kib((r.PSS-r.PSSBase)/n), kib(r.RSS/n))
	fmt.Fprintf(w, "after a GC and debug.FreeOSMemory: VmRSS %.1f MiB, %.1f KiB per connection above the base\n",
		mib(r.RSSFreed), kib((r.RSSFreed-r.RSSBase)/n))
	fmt.Fprintf(w, "server Go accounting after a GC: heap in use %.1f MiB, stacks %.1f MiB, %d goroutines (%.2f per connection), sys %.1f MiB\n",
		mib(int64(r.Mem.HeapInuse)), mib(int64(r.Mem.StackInuse)), r.Mem.Goroutines, float64(r.Mem.Goroutines)/float64(n), mib(int64(r.Mem.Sys)))
	fmt.Fprintf(w, "per connection: heap %.1f KiB, stack %.1f KiB\n", kib(int64(r.Mem.HeapInuse)/n), kib(int64(r.Mem.StackInuse)/n))
	fmt.Fprintf(w, "server CPU while idle: %v over %v (%.3f%% of a core); clients' %v, clients' VmRSS %.1f MiB\n",
		r.IdleCPU.Round(time.Microsecond), r.Idle, 100*r.IdleCPU.Seconds()/r.Idle.Seconds(), r.ClientIdleCPU, mib(r.ClientRSS))
	fmt.Fprintf(w, "fan-out: a deposit into each of %d mailboxes, %d at a time; %d clients missed theirs\n", r.Mailboxes, r.Depositors, r.Missing)
	fmt.Fprintf(w, "  deposit to the last client of its mailbox: %s (%d mailboxes)\n", percentiles(r.Fanout), len(r.Fanout))
	fmt.Fprintf(w, "  deposit to each client:                    %s (%d clients)\n", percentiles(r.PerClient), len(r.PerClient))
	fmt.Fprintf(w, "  the deposit call itself:                   %s\n", percentiles(r.Deposit))
	fmt.Fprintf(w, "  its return to the last client:             %s\n", percentiles(r.AfterCommit))
	fmt.Fprintf(w, "  server CPU for deposits and notifications %v; VmRSS after %.1f MiB\n", r.FanoutCPU.Round(time.Millisecond), mib(r.RSSAfter))
}

// percentiles formats the p50, p99 and max of sorted durations.
func percentiles(d []time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	at := func(q float64) time.Duration { return d[min(int(q*float64(len(d))), len(d)-1)] }
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	return fmt.Sprintf("p50 %.1f ms, p99 %.1f ms, max %.1f ms", ms(at(0.50)), ms(at(0.99)), ms(d[len(d)-1]))
}

func kib(n int64) float64 { return float64(n) / 1024 }
