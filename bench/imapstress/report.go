package main

import (
	"fmt"
	"io"
	"runtime"
	"strings"
)

// Report prints one table row per run and the per-command latencies.
func Report(w io.Writer, cfg Config, res []Result) {
	fmt.Fprintf(w, "imaptest stress: users=%d clients=%d secs=%d %s; mbox of %d e-mails and %d voicemails of %d-%d KB\n\n",
		cfg.Users, cfg.Clients, int(cfg.Duration.Seconds()), cfg.Extra, cfg.Emails, cfg.Voicemails, cfg.MinSize>>10, cfg.MaxSize>>10)
	fmt.Fprintf(w, "| server | commands/s | commands per CPU s | peak memory | of it anonymous | peak PSS | errors | in flight | logins/s | server, imaptest CPU | idle cores of %d |\n|---|---|---|---|---|---|---|---|---|---|---|\n", runtime.NumCPU())
	for _, r := range res {
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.1f MiB | %.1f MiB | %.1f MiB | %d | %.1f | %.0f | %.2f, %.2f | %.2f |\n", r.Server, r.CommandsPerSec(), r.CommandsPerCPUSec(), mib(r.PeakRSS), mib(r.PeakAnon), mib(r.PeakPSS), r.Errors, r.InFlight(), r.LoginsPerSec(),
			r.CPU.Seconds()/r.Elapsed.Seconds(), r.ClientCPU.Seconds()/r.Elapsed.Seconds(), r.IdleCores(runtime.NumCPU()))
	}
	fmt.Fprintf(w, "\nmean latency per command (ms):\n")
	var kinds []string
	if len(res) > 0 {
		kinds = res[0].Order
	}
	fmt.Fprintf(w, "| server | %s |\n|---|%s\n", strings.Join(kinds, " | "), strings.Repeat("---|", len(kinds)))
	for _, r := range res {
		var cells []string
		for _, k := range kinds {
			if kk := r.Kinds[k]; kk != nil && kk.Timed > 0 {
				cells = append(cells, fmt.Sprintf("%.1f", float64(kk.Mean().Microseconds())/1000))
			} else {
				cells = append(cells, "-")
			}
		}
		fmt.Fprintf(w, "| %s | %s |\n", r.Server, strings.Join(cells, " | "))
	}
	for _, r := range res {
		if r.Errors > 0 {
			fmt.Fprintf(w, "\n%s: %d imaptest errors, first: %s\n", r.Server, r.Errors, r.First)
		}
	}
}
