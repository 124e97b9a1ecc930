// Command imapstress runs Dovecot's IMAP tester, imaptest, in its stress
// mode against um's IMAP server (durable, on boltstore), Dovecot with its
// default settings and go-imap's in-memory example server, one after
// another with the same parameters, and prints for each the commands per
// second, commands per second of server CPU, the mean latency of each kind
// of command and the server's peak memory.
//
// imaptest's stress mode runs many clients at once on the same folders,
// each doing random commands (FETCH, STORE, APPEND from an mbox, EXPUNGE,
// ...), and checks that every session's view stays consistent with the
// others'. Its error lines are counted here: a server that answers fast but
// wrong is not faster.
//
// Usage, from the repository root:
//
//	go run ./bench/imapstress                      # users=100 clients=20 secs=30, all three servers
//	go run ./bench/imapstress -rounds 3 -secs 30   # alternate the servers three times
//	go run ./bench/imapstress -servers um -profile noop=50,idle=50
//	go run ./bench/imapstress -servers um -pprof /tmp/prof   # then go tool pprof /tmp/prof/um-0/cpu.pprof
//	go run ./bench/imapstress -servers um,um-memstore       # what the durable store costs
//
// imaptest is the binary -imaptest or $IMAPTEST names; without either it is
// built from ../shared/tools/imaptest (beside the repository).
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	if spec := os.Getenv(serverEnv); spec != "" {
		os.Exit(serveChild(spec))
	}
	cfg := defaultConfig()
	flag.StringVar(&cfg.Servers, "servers", cfg.Servers, "comma-separated servers to run: um, um-memstore (um on its in-memory store), dovecot, memserver")
	flag.IntVar(&cfg.Users, "users", cfg.Users, "imaptest users=")
	flag.IntVar(&cfg.Clients, "clients", cfg.Clients, "imaptest clients=")
	flag.DurationVar(&cfg.Duration, "secs", cfg.Duration, "length of each run")
	flag.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "how many times to run every server, alternating")
	flag.StringVar(&cfg.Extra, "profile", cfg.Extra, "extra imaptest settings, comma-separated (noop=50,idle=50)")
	flag.StringVar(&cfg.Imaptest, "imaptest", cfg.Imaptest, "imaptest binary (built from ../shared/tools/imaptest when empty)")
	flag.StringVar(&cfg.Dir, "dir", cfg.Dir, "working directory (a temporary one when empty)")
	flag.StringVar(&cfg.Pprof, "pprof", cfg.Pprof, "folder for CPU, mutex, block and heap profiles of the um and memserver children, one subfolder per run")
	flag.Parse()
	cfg.Log = os.Stderr
	res, err := Run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapstress:", err)
		os.Exit(1)
	}
	Report(os.Stdout, cfg, res)
}

// Config is one comparison.
type Config struct {
	Servers  string
	Users    int
	Clients  int
	Duration time.Duration
	Rounds   int
	Extra    string
	Imaptest string
	Dir      string
	// Pprof, when not empty, is the folder the Go children (um and
	// memserver) write their profiles into, in a subfolder per run
	// ("um-0", "memserver-0", ...); see pprofEnv.
	Pprof string
	// Emails and Voicemails are the messages of the generated mbox that
	// imaptest APPENDs: small e-mails and rendered voicemails of
	// MinSize-MaxSize bytes.
	Emails, Voicemails int
	MinSize, MaxSize   int
	Log                interface{ Write([]byte) (int, error) }
}

func defaultConfig() Config {
	return Config{
		Servers:    "um,dovecot,memserver",
		Users:      100,
		Clients:    20,
		Duration:   30 * time.Second,
		Rounds:     1,
		Emails:     200,
		Voicemails: 40,
		MinSize:    217 << 10,
		MaxSize:    541 << 10,
	}
}

func (c Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, format+"\n", args...)
	}
}

func (c Config) servers() []string {
	var out []string
	for _, s := range strings.Split(c.Servers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
