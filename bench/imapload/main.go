// Command imapload compares um's embedded IMAP server with Dovecot under the
// same load in one run.
//
// It fills a um store (the embedded default, boltstore, in a temporary
// directory) with voicemail of 200-500 KB through um, and a throwaway Dovecot
// with the same messages rendered by um.RenderEmail, plus some ordinary small
// e-mails. Then, for each server in turn, N clients (go-imap v2 imapclient)
// loop for a fixed time over whole sessions:
//
//	LOGIN, SELECT INBOX, FETCH 1:* (UID ENVELOPE FLAGS RFC822.SIZE),
//	UID FETCH <a voicemail> BODY.PEEK[], UID STORE <a voicemail> ±FLAGS \Seen,
//	APPEND Archive, SELECT Archive, UID STORE <appended> +FLAGS \Deleted,
//	EXPUNGE, LOGOUT
//
// and it reports commands per second and the servers' memory. um's server
// runs in a child process (this program started again), so that its memory
// is its own; memory is the summed VmRSS of the server's process tree,
// sampled every 100 ms, and the peak is reported.
//
// Usage:
//
//	go run ./bench/imapload -clients 50 -duration 20s
//	go run ./bench/imapload -clients 50 -rate 40   # 40 sessions a second, offered to each server
//
// Without -rate each client starts its next session as soon as the last
// ends, the most the server does; latency then is mostly the queue in front
// of it. With -rate the sessions are offered at that rate whatever the
// server does (an open loop), so both servers get the same load and their
// latency per command (p50 and p99, reported) compares as a user's would.
//
// Dovecot runs with its default settings (a login process and an imap
// process per connection), the comparison the goal is set against;
// -dovecot-performance runs it in its high-performance mode instead, the
// harder comparison.
//
// It needs Dovecot (Debian package dovecot-imapd) and runs as root, which
// Dovecot's privilege separation needs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	cfg := defaultConfig()
	flag.IntVar(&cfg.Clients, "clients", cfg.Clients, "concurrent clients per server")
	flag.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long each server is loaded")
	flag.IntVar(&cfg.Mailboxes, "mailboxes", cfg.Mailboxes, "voice mailboxes (clients are spread over them)")
	flag.IntVar(&cfg.Messages, "messages", cfg.Messages, "voicemails per mailbox")
	flag.IntVar(&cfg.Emails, "emails", cfg.Emails, "ordinary small e-mails per mailbox (Dovecot INBOX, um Archive)")
	flag.IntVar(&cfg.MinSize, "min-size", cfg.MinSize, "smallest voicemail, bytes as rendered")
	flag.IntVar(&cfg.MaxSize, "max-size", cfg.MaxSize, "largest voicemail, bytes as rendered")
	flag.BoolVar(&cfg.TLS, "tls", cfg.TLS, "connect with implicit TLS (otherwise plain text, passwords in clear on loopback)")
	flag.BoolVar(&cfg.DovecotFast, "dovecot-performance", cfg.DovecotFast, "run Dovecot in its high-performance mode (long-lived login processes, reused imap processes) instead of its default settings (a process per connection)")
	flag.StringVar(&cfg.Servers, "servers", cfg.Servers, "servers to load: um, dovecot or both")
	flag.Float64Var(&cfg.Rate, "rate", cfg.Rate, "sessions a second over all clients, offered whatever the server does (0: each client runs sessions back to back)")
	flag.Int64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the message sizes and the clients' choices")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	cfg.Log = os.Stderr
	ctx := context.Background()
	res, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapload:", err)
		os.Exit(1)
	}
	Report(os.Stdout, cfg, res)
	for _, r := range res {
		if r.Errors > 0 {
			os.Exit(1)
		}
	}
}

func defaultConfig() Config {
	return Config{
		Clients:     50,
		Duration:    20 * time.Second,
		Mailboxes:   10,
		Messages:    20,
		Emails:      5,
		MinSize:     200 << 10,
		MaxSize:     500 << 10,
		TLS:         true,
		DovecotFast: false,
		Servers:     "both",
		Seed:        1,
	}
}
