// Command imapidle measures um's IMAP server holding many idling TLS
// clients: its memory and CPU while they idle, and how fast a deposit
// reaches every client idling on its mailbox.
//
// It fills a um store (the embedded default, boltstore, in a temporary
// directory) with the voice mailboxes and a voicemail in each, and starts
// um's server on it in a child process (this program started again), so
// that the memory and CPU measured are the server's alone. Clients run in
// further child processes, each holding a share of the connections, since
// one process may not hold more descriptors than RLIMIT_NOFILE allows.
// Each connection binds its own source address in 127.0.0.0/8 (Linux
// routes all of it to the loopback interface), speaks implicit TLS 1.3 with
// a full handshake (no session resumption: a client connecting for the
// first time, or after the server restarted), and does
//
//	LOGIN, SELECT INBOX, IDLE
//
// and then idles. Connection i uses mailbox i mod -mailboxes. Once all are
// idling, the tool measures the server for -idle: CPU time, VmRSS and PSS
// (from /proc), and Go's own accounting after a collection (live heap,
// goroutine stacks, goroutines). Then the server deposits one voicemail
// into each mailbox (-depositors at a time) and every client notes when it
// read its "* n EXISTS"; the tool reports, over the mailboxes, the time
// from the start of the deposit to the last of its clients having read it
// (p50, p99, max), and the same per client.
//
// One process holds at most RLIMIT_NOFILE descriptors (the hard limit; the
// tool raises the soft one to it): when -conns would leave the server fewer
// than 128 for its store and listener, the tool holds fewer connections and
// says so.
//
// Usage:
//
//	go build -o /tmp/imapidle ./bench/imapidle
//	/tmp/imapidle -conns 20000 -mailboxes 1000 -idle 30s
//
// A client written by hand over crypto/tls keeps the client side cheap: the
// server's share of the two cores is what is measured.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"
)

func main() {
	switch os.Getenv(roleEnv) {
	case roleServer:
		os.Exit(serverMain())
	case roleClient:
		os.Exit(clientMain())
	}
	cfg := defaultConfig()
	flag.IntVar(&cfg.Conns, "conns", cfg.Conns, "idling TLS connections")
	flag.IntVar(&cfg.Mailboxes, "mailboxes", cfg.Mailboxes, "voice mailboxes (connection i logs in to mailbox i mod mailboxes)")
	flag.IntVar(&cfg.Messages, "messages", cfg.Messages, "voicemails in each INBOX before the clients connect")
	flag.IntVar(&cfg.PerProcess, "per-process", cfg.PerProcess, "connections per client process")
	flag.Float64Var(&cfg.Rate, "rate", cfg.Rate, "new connections per second, over all client processes")
	flag.IntVar(&cfg.Parallel, "parallel", cfg.Parallel, "connections being set up at once, per client process")
	flag.DurationVar(&cfg.Idle, "idle", cfg.Idle, "how long the idle server is measured")
	flag.IntVar(&cfg.Depositors, "depositors", cfg.Depositors, "deposits run at once in the fan-out")
	flag.DurationVar(&cfg.Wait, "wait", cfg.Wait, "how long the clients may take to see the deposits")
	flag.StringVar(&cfg.HeapProfile, "heapprofile", "", "write the idle server's heap profile to this file")
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	cfg.Log = os.Stderr
	res, err := Run(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapidle:", err)
		os.Exit(1)
	}
	Report(os.Stdout, res)
	if res.Failed > 0 || res.Missing > 0 {
		os.Exit(1)
	}
}

func defaultConfig() Config {
	return Config{
		Conns:      20000,
		Mailboxes:  1000,
		Messages:   1,
		PerProcess: 5000,
		Rate:       500,
		Parallel:   32,
		Idle:       30 * time.Second,
		Depositors: 4,
		Wait:       60 * time.Second,
	}
}
