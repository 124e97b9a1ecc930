package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

// Report writes a table of the results and, when both servers ran, how um
// compares.
func Report(w io.Writer, cfg Config, res []Result) {
	mode := "implicit TLS"
	if !cfg.TLS {
		mode = "plain text"
	}
	dmode := "default (a process per login)"
	if cfg.DovecotFast {
		dmode = "high-performance"
	}
	fmt.Fprintf(w, "%d clients for %v each, %s; %d mailboxes x %d voicemails of %d-%d KB + %d e-mails; Dovecot %s\n\n",
		cfg.Clients, cfg.Duration, mode, cfg.Mailboxes, cfg.Messages, cfg.MinSize>>10, cfg.MaxSize>>10, cfg.Emails, dmode)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tsessions\tcommands\tcommands/s\tBODY[] MiB/s\terrors\tserver CPU s\tcommands/CPU s\tRSS before MiB\tpeak RSS MiB\t")
	var u, d *Result
	for i := range res {
		r := &res[i]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.1f\t%d\t%.1f\t%.0f\t%.1f\t%.1f\t\n", r.Server, r.Sessions, r.Commands, r.CommandsPerSec(),
			mib(r.Fetched)/r.Elapsed.Seconds(), r.Errors, r.CPU.Seconds(), r.CommandsPerCPUSec(), mib(r.IdleRSS), mib(r.PeakRSS))
		switch r.Server {
		case "um":
			u = r
		case "dovecot":
			d = r
		}
	}
	tw.Flush()
	if cfg.Rate > 0 {
		fmt.Fprintf(w, "\noffered %.1f sessions/s\n", cfg.Rate)
	}
	fmt.Fprintf(w, "\nlatency per command, p50 / p99 (ms):\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var order []string
	for _, r := range res {
		for _, what := range r.Order {
			if !slices.Contains(order, what) {
				order = append(order, what)
			}
		}
	}
	fmt.Fprintf(tw, "server\t%s\tlate sessions\t\n", strings.Join(order, "\t"))
	for _, r := range res {
		fmt.Fprintf(tw, "%s\t", r.Server)
		for _, what := range order {
			fmt.Fprintf(tw, "%s / %s\t", ms(r.Quantile(what, 0.5)), ms(r.Quantile(what, 0.99)))
		}
		fmt.Fprintf(tw, "%d\t\n", r.Late)
	}
	tw.Flush()
	for _, r := range res {
		if r.FirstErr != "" {
			fmt.Fprintf(w, "%s: first error: %s\n", r.Server, r.FirstErr)
		}
	}
	if u != nil && u.HWM > 0 {
		fmt.Fprintf(w, "\num server process VmHWM (whole life, filling excluded): %.1f MiB\n", mib(u.HWM))
	}
	if u != nil && d != nil && d.Commands > 0 && d.PeakRSS > 0 {
		fmt.Fprintf(w, "um/Dovecot: commands/s x%.2f, commands per server CPU second x%.2f, peak RSS x%.2f\n",
			u.CommandsPerSec()/d.CommandsPerSec(), u.CommandsPerCPUSec()/d.CommandsPerCPUSec(), float64(u.PeakRSS)/float64(d.PeakRSS))
	}
}
