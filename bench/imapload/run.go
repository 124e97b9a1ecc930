package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/bench/internal/benchserver"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/wav"
	"github.com/emersion/go-imap/v2/imapclient"
)

// Config is one run of the tool.
type Config struct {
	Clients          int
	Duration         time.Duration
	Mailboxes        int
	Messages         int // voicemails per mailbox
	Emails           int // small e-mails per mailbox
	MinSize, MaxSize int // rendered voicemail sizes
	TLS              bool
	DovecotFast      bool
	Servers          string // "um", "dovecot" or "both"
	Seed             int64
	// Rate, when above 0, offers that many sessions a second over all
	// clients, whatever the server does (an open loop); 0 runs each client
	// session after session (a closed loop, the server's most).
	Rate float64
	Dir  string    // work directory; a temporary one when empty
	Log  io.Writer // progress; nil for none
}

// Result is what one server did under the load.
type Result struct {
	Server   string
	Elapsed  time.Duration
	Sessions int64 // LOGIN to LOGOUT, completed
	Commands int64 // tagged commands that succeeded
	Errors   int64 // commands that failed (NO, BAD, a broken connection)
	Fetched  int64 // bytes of BODY[] received
	FirstErr string

	IdleRSS int64 // process tree RSS after filling, before the load
	PeakRSS int64 // highest process tree RSS sampled during the load
	HWM     int64 // um only: the child's VmHWM at the end
	// CPU is the CPU time the server's process tree used during the load.
	// The clients run on the same machine; the commands per CPU second
	// of the server tell its cost apart from theirs.
	CPU time.Duration
	// Late counts sessions of an open loop that started after their time,
	// their client still busy with the one before: the offered rate was
	// not kept.
	Late int64
	// Latency holds, per command, the sorted latencies of its successes;
	// Order names the commands in session order.
	Latency map[string][]time.Duration
	Order   []string
}

// Quantile returns the q quantile (0 < q <= 1) of what's latencies, or 0
// when it has none.
func (r Result) Quantile(what string, q float64) time.Duration {
	d := r.Latency[what]
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

// CommandsPerCPUSec returns the successful commands per second of the
// server's CPU time.
func (r Result) CommandsPerCPUSec() float64 { return float64(r.Commands) / r.CPU.Seconds() }

// CommandsPerSec returns the rate of successful commands.
func (r Result) CommandsPerSec() float64 { return float64(r.Commands) / r.Elapsed.Seconds() }

func (c Config) logf(format string, args ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, format+"\n", args...)
	}
}

func userName(i int) string { return strconv.Itoa(2000 + i) }

// Run fills both servers and loads each in turn.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if cfg.Clients < 1 || cfg.Mailboxes < 1 || cfg.Messages < 1 || cfg.MinSize < 4096 || cfg.MaxSize < cfg.MinSize {
		return nil, errors.New("need clients, mailboxes, messages >= 1 and 4096 <= min-size <= max-size")
	}
	doUM := cfg.Servers == "um" || cfg.Servers == "both"
	doDovecot := cfg.Servers == "dovecot" || cfg.Servers == "both"
	if !doUM && !doDovecot {
		return nil, fmt.Errorf("-servers %q: want um, dovecot or both", cfg.Servers)
	}
	dir := cfg.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "imapload-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	users := make(map[string]string, cfg.Mailboxes)
	for i := range cfg.Mailboxes {
		users[userName(i)] = benchserver.Password(userName(i))
	}

	var dc *dovecot.Server
	if doDovecot {
		var err error
		dc, err = dovecot.Start(dovecot.Options{
			Dir:             filepath.Join(dir, "dovecot"),
			Users:           users,
			AllowPlaintext:  !cfg.TLS,
			HighPerformance: cfg.DovecotFast,
		})
		if err != nil {
			return nil, err
		}
		defer dc.Stop()
	}
	cfg.logf("filling %d mailboxes with %d voicemails of %d-%d KB and %d e-mails each",
		cfg.Mailboxes, cfg.Messages, cfg.MinSize>>10, cfg.MaxSize>>10, cfg.Emails)
	t0 := time.Now()
	if err := fill(ctx, cfg, filepath.Join(dir, "um"), dc); err != nil {
		return nil, err
	}
	cfg.logf("filled in %v", time.Since(t0).Round(time.Millisecond))

	var out []Result
	if doUM {
		child, err := startChild(filepath.Join(dir, "um"), cfg.TLS)
		if err != nil {
			return nil, err
		}
		target := Target{Name: "um", PID: child.PID(), TLSConfig: child.TLSConfig()}
		target.Addr = child.PlainAddr
		if cfg.TLS {
			target.Addr = child.TLSAddr
		}
		r, err := load(ctx, cfg, target)
		if err == nil {
			r.HWM, _ = dovecot.StatusField(child.PID(), "VmHWM")
		}
		if cerr := child.Stop(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if doDovecot {
		target := Target{Name: "dovecot", PID: dc.PID(), TLSConfig: dc.TLSConfig(), Addr: dc.Addr}
		if cfg.TLS {
			target.Addr = dc.TLSAddr
		}
		r, err := load(ctx, cfg, target)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// fill deposits the voicemail into a boltstore in dir through um and, when
// dc is not nil, appends the same messages as um renders them to Dovecot,
// with the small e-mails among them.
func fill(ctx context.Context, cfg Config, dir string, dc *dovecot.Server) error {
	svc, closeAll, err := benchserver.Open(dir)
	if err != nil {
		return err
	}
	defer closeAll()
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0))
	for i := range cfg.Mailboxes {
		user := userName(i)
		mb, err := svc.CreateMailbox(ctx, user)
		if err != nil {
			return err
		}
		if _, err := mb.CreateFolder(ctx, archive); err != nil {
			return err
		}
		var c *imapclient.Client
		if dc != nil {
			if c, err = imapclient.DialTLS(dc.TLSAddr, &imapclient.Options{TLSConfig: dc.TLSConfig()}); err != nil {
				return fmt.Errorf("dovecot: %w", err)
			}
			if err := c.Login(user, benchserver.Password(user)).Wait(); err != nil {
				c.Close()
				return fmt.Errorf("dovecot: login %s: %w", user, err)
			}
			if err := c.Create(archive, nil).Wait(); err != nil {
				c.Close()
				return fmt.Errorf("dovecot: create %s: %w", archive, err)
			}
		}
		emailAt := make(map[int]bool)
		for range cfg.Emails {
			emailAt[rng.IntN(cfg.Messages+1)] = true
		}
		for j := 0; j <= cfg.Messages; j++ {
			if emailAt[j] {
				mail := smallEmail(user, i*1000+j)
				if _, err := mb.Append(ctx, archive, um.Message{}, bytes.NewReader(mail)); err != nil {
					return err
				}
				if c != nil {
					if err := appendTo(c, "INBOX", mail); err != nil {
						return err
					}
					if err := appendTo(c, archive, mail); err != nil {
						return err
					}
				}
			}
			if j == cfg.Messages {
				break
			}
			size := cfg.MinSize + rng.IntN(cfg.MaxSize-cfg.MinSize+1)
			audio := wav.Noise(audioBytes(size), rng)
			m, err := mb.Deposit(ctx, um.Deposit{
				Audio:        bytes.NewReader(audio),
				CallerNumber: fmt.Sprintf("+49301234%04d", rng.IntN(10000)),
				CallerName:   fmt.Sprintf("Caller %d", j),
				Duration:     time.Duration(len(audio)/16) * time.Millisecond,
				Urgent:       j%7 == 3,
			})
			if err != nil {
				return err
			}
			if c != nil {
				var b bytes.Buffer
				// The server renders with the mailbox as To; so does this.
				if _, err := um.RenderEmail(m, um.RenderOptions{Mailbox: user}).WriteTo(&b, bytes.NewReader(audio)); err != nil {
					return err
				}
				if err := appendTo(c, "INBOX", b.Bytes()); err != nil {
					return err
				}
			}
		}
		if c != nil {
			c.Logout().Wait()
			c.Close()
		}
	}
	return nil
}

const archive = "Archive"

func appendTo(c *imapclient.Client, folder string, msg []byte) error {
	w := c.Append(folder, int64(len(msg)), nil)
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("dovecot: append: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("dovecot: append: %w", err)
	}
	if _, err := w.Wait(); err != nil {
		return fmt.Errorf("dovecot: append: %w", err)
	}
	return nil
}

// audioBytes returns the audio length that renders to about size bytes:
// base64 turns 57 bytes into a 78-byte line, and the header and text part
// take about 2 KB.
func audioBytes(size int) int { return max(size-2048, 1024) * 57 / 78 }

// noiseWAV returns a WAV file (8 kHz 16-bit mono PCM) of n bytes of noise:
// noise does not compress, like real audio.
// smallEmail returns an ordinary e-mail of about 2 KB.
func smallEmail(user string, n int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Date: Mon, 3 Mar 2025 10:%02d:00 +0000\r\n", n%60)
	fmt.Fprintf(&b, "From: Colleague <colleague%d@example.com>\r\n", n)
	fmt.Fprintf(&b, "To: <%s@example.com>\r\n", user)
	fmt.Fprintf(&b, "Subject: Meeting notes %d\r\n", n)
	fmt.Fprintf(&b, "Message-ID: <note-%d-%s@example.com>\r\n", n, user)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	for i := range 25 {
		fmt.Fprintf(&b, "Line %02d of the notes: the quick brown fox jumps over the dog.\r\n", i)
	}
	return b.Bytes()
}

// Target is a server under load.
type Target struct {
	Name      string
	Addr      string
	PID       int // root of the server's process tree
	TLSConfig *tls.Config
}

// dial connects to t with TLS or without.
func (t Target) dial(useTLS bool) (*imapclient.Client, error) {
	if useTLS {
		return imapclient.DialTLS(t.Addr, &imapclient.Options{TLSConfig: t.TLSConfig})
	}
	return imapclient.DialInsecure(t.Addr, nil)
}
