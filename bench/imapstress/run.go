package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/wav"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/google/uuid"
)

// Result is one server's run.
type Result struct {
	Server  string
	Elapsed time.Duration
	CPU     time.Duration // server CPU time, its whole process tree
	// ClientCPU is imaptest's CPU time: with the server's, what is left
	// of the machine's cores tells a server waiting (on its disk, its
	// locks) from one short of CPU.
	ClientCPU time.Duration
	PeakRSS   int64 // sampled every 100 ms, its whole process tree
	// PeakAnon is the peak of the tree's anonymous memory (RssAnon): its
	// RSS less the pages of files mapped in, such as um.db's, which the
	// kernel drops when it needs the room.
	PeakAnon int64
	// PeakPSS is the peak of the tree's summed proportional set size:
	// shared pages (libraries, a binary run as many processes) count once
	// over the tree, not once per process as in PeakRSS.
	PeakPSS  int64
	Commands int64
	// Kinds holds per command kind (imaptest's state names: FETCH, STORE,
	// APPEND, ...) how many were done and their summed latency.
	Kinds  map[string]*Kind
	Order  []string // kinds in imaptest's order
	Errors int      // imaptest's "Error:" lines
	First  string   // the first of them
}

// Kind is one command kind's tally.
type Kind struct {
	Count   int64
	Timed   int64
	Latency time.Duration // summed over Timed
}

// Mean is the mean latency of the timed commands of the kind.
func (k *Kind) Mean() time.Duration {
	if k.Timed == 0 {
		return 0
	}
	return k.Latency / time.Duration(k.Timed)
}

// CommandsPerSec is the throughput of the run.
func (r Result) CommandsPerSec() float64 { return float64(r.Commands) / r.Elapsed.Seconds() }

// InFlight is the mean number of commands sent and not yet answered: by
// Little's law the mean latency over all commands times the throughput.
// imaptest keeps up to ten commands in flight on a client where it may, so
// on a saturated machine a server's mean latency is InFlight over its
// throughput: a faster server, whose clients spend less of their time
// connecting and logging in, has more of them in flight.
func (r Result) InFlight() float64 {
	var sum time.Duration
	for _, k := range r.Kinds {
		sum += k.Latency
	}
	return sum.Seconds() / r.Elapsed.Seconds()
}

// IdleCores returns the machine's cores that neither the server nor
// imaptest used over the run, of cores.
func (r Result) IdleCores(cores int) float64 {
	return float64(cores) - (r.CPU+r.ClientCPU).Seconds()/r.Elapsed.Seconds()
}

// LoginsPerSec is how many sessions the clients began each second.
func (r Result) LoginsPerSec() float64 {
	if k := r.Kinds["LOGIN"]; k != nil {
		return float64(k.Count) / r.Elapsed.Seconds()
	}
	return 0
}

// CommandsPerCPUSec is the throughput per second of server CPU.
func (r Result) CommandsPerCPUSec() float64 {
	if r.CPU <= 0 {
		return 0
	}
	return float64(r.Commands) / r.CPU.Seconds()
}

// Run runs the comparison and returns the results in the order they ran.
func Run(cfg Config) ([]Result, error) {
	servers := cfg.servers()
	if len(servers) == 0 || cfg.Users < 1 || cfg.Clients < 1 || cfg.Rounds < 1 || cfg.Duration < time.Second {
		return nil, errors.New("need servers, users, clients and rounds >= 1 and secs >= 1s")
	}
	dir := cfg.Dir
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	} else {
		d, err := os.MkdirTemp("", "imapstress-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	bin := cfg.Imaptest
	if bin == "" {
		// scripts/test.sh builds it once for every test that needs it.
		bin = os.Getenv("IMAPTEST")
	}
	if bin == "" {
		var err error
		if bin, err = buildImaptest(); err != nil {
			return nil, err
		}
	}
	mbox := filepath.Join(dir, "stress.mbox")
	if err := writeMbox(mbox, cfg); err != nil {
		return nil, err
	}
	var out []Result
	for round := range cfg.Rounds {
		for i := range servers {
			// Alternate the order each round, so neither server always
			// runs on a machine warmed (or tired) by the other.
			name := servers[i]
			if round%2 == 1 {
				name = servers[len(servers)-1-i]
			}
			r, err := runOne(cfg, bin, mbox, filepath.Join(dir, fmt.Sprintf("%s-%d", name, round)), name)
			if err != nil {
				return out, fmt.Errorf("%s: %w", name, err)
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func runOne(cfg Config, bin, mbox, dir, name string) (Result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Result{}, err
	}
	var prof string
	if cfg.Pprof != "" {
		prof = filepath.Join(cfg.Pprof, filepath.Base(dir))
	}
	t, err := startTarget(name, dir, cfg.Users, prof)
	if err != nil {
		return Result{}, err
	}
	stopped := false
	defer func() {
		if !stopped {
			t.stop()
		}
	}()
	host, port, _ := strings.Cut(t.addr, ":")
	if h, p, ok := cutLast(t.addr); ok {
		host, port = h, p
	}
	if err := createBox(t.addr, cfg.Users); err != nil {
		return Result{}, err
	}
	output := filepath.Join(dir, "imaptest.out")
	args := []string{
		"host=" + host, "port=" + port, "user=user%d", "pass=" + password,
		"users=" + strconv.Itoa(cfg.Users), "clients=" + strconv.Itoa(cfg.Clients),
		"secs=" + strconv.Itoa(int(cfg.Duration.Seconds())),
		"mbox=" + mbox, "box=stress", "output=" + output,
	}
	for _, e := range strings.Split(cfg.Extra, ",") {
		if e = strings.TrimSpace(e); e != "" {
			args = append(args, e)
		}
	}
	cfg.logf("%s: imaptest %s", name, strings.Join(args, " "))

	stopSampling := dovecot.SamplePeakRSS(t.pid, 100*time.Millisecond)
	stopAnon := dovecot.SamplePeak(t.pid, "RssAnon", 100*time.Millisecond)
	stopPSS := dovecot.SamplePeakPSS(t.pid, 100*time.Millisecond)
	cpu0, err := dovecot.TreeCPU(t.pid)
	if err != nil {
		return Result{}, err
	}
	cmd := exec.Command(bin, args...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stdout
	start := time.Now()
	runErr := cmd.Run()
	elapsed := time.Since(start)
	cpu1, cerr := dovecot.TreeCPU(t.pid)
	peak, anon, pss := stopSampling(), stopAnon(), stopPSS()
	if cerr != nil {
		return Result{}, cerr
	}
	if runErr != nil && !isExit(runErr) {
		return Result{}, fmt.Errorf("imaptest: %w\n%s", runErr, tail(stdout.Bytes()))
	}
	os.WriteFile(filepath.Join(dir, "imaptest.log"), stdout.Bytes(), 0o644)
	r := Result{Server: name, Elapsed: elapsed, CPU: cpu1 - cpu0, PeakRSS: peak, PeakAnon: anon, PeakPSS: pss}
	if ps := cmd.ProcessState; ps != nil {
		r.ClientCPU = ps.UserTime() + ps.SystemTime()
	}
	if err := parseOutput(output, &r); err != nil {
		return Result{}, fmt.Errorf("%w\n%s", err, tail(stdout.Bytes()))
	}
	sc := bufio.NewScanner(bytes.NewReader(stdout.Bytes()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Error:") {
			if r.Errors == 0 {
				r.First = sc.Text()
			}
			r.Errors++
		}
	}
	stopped = true
	if err := t.stop(); err != nil {
		return Result{}, fmt.Errorf("stop: %w", err)
	}
	cfg.logf("%s: %.0f commands/s, %d errors, peak %.1f MiB", name, r.CommandsPerSec(), r.Errors, mib(r.PeakRSS))
	return r, nil
}

// createBox creates the folder imaptest works in for every user: its
// stress mode expects it to exist.
func createBox(addr string, users int) error {
	for i := 1; i <= users; i++ {
		c, err := imapclient.DialInsecure(addr, nil)
		if err != nil {
			return err
		}
		err = c.Login(userName(i), password).Wait()
		if err == nil {
			err = c.Create("stress", nil).Wait()
		}
		c.Close()
		if err != nil {
			return fmt.Errorf("create the folder stress for %s: %w", userName(i), err)
		}
	}
	return nil
}

func cutLast(addr string) (host, port string, ok bool) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", "", false
	}
	return addr[:i], addr[i+1:], true
}

func isExit(err error) bool {
	var ee *exec.ExitError
	return errors.As(err, &ee)
}

// parseOutput reads imaptest's output= file: a header line of
// "NAME count<TAB>NAME msecs" pairs, then a line per second of
// "count<TAB>timed<TAB>msecs" triples.
func parseOutput(path string, r *Result) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("imaptest wrote no results: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return errors.New("imaptest results have no data rows")
	}
	head := strings.Split(lines[0], "\t")
	var names []string
	for i := 0; i+1 < len(head); i += 2 {
		names = append(names, strings.TrimSuffix(head[i], " count"))
	}
	r.Kinds = make(map[string]*Kind, len(names))
	r.Order = names
	for _, n := range names {
		r.Kinds[n] = &Kind{}
	}
	for _, line := range lines[1:] {
		f := strings.Split(line, "\t")
		for i, n := range names {
			if 3*i+2 >= len(f) {
				break
			}
			c, _ := strconv.ParseInt(f[3*i], 10, 64)
			timed, _ := strconv.ParseInt(f[3*i+1], 10, 64)
			ms, _ := strconv.ParseInt(f[3*i+2], 10, 64)
			k := r.Kinds[n]
			k.Count += c
			k.Timed += timed
			k.Latency += time.Duration(ms) * time.Millisecond
		}
	}
	for _, n := range names {
		// LOGOUT and the connection states are not commands the server
		// does work for in the sense compared here, but imaptest counts
		// them alike; keep its total so the figures match its own.
		r.Commands += r.Kinds[n].Count
	}
	if r.Commands == 0 {
		return errors.New("imaptest counted no commands")
	}
	return nil
}

// buildImaptest builds imaptest from the source packaged beside the
// repository into build.sh's cache folder, which it reuses once built. The
// build runs under a lock: tests of other packages build it too, at the
// same time.
func buildImaptest() (string, error) {
	script, err := findImaptestScript()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("flock", filepath.Join(os.TempDir(), "um-imaptest-build.lock"), script)
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build imaptest: %w\n%s", err, tail(buf.Bytes()))
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	return lines[len(lines)-1], nil
}

// findImaptestScript looks for ../shared/tools/imaptest/build.sh above the
// working directory, so the tool runs from anywhere in the repository.
func findImaptestScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "..", "shared", "tools", "imaptest", "build.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("imaptest's build.sh not found in ../shared/tools/imaptest above the working directory; pass -imaptest")
		}
		dir = parent
	}
}

// writeMbox writes the messages imaptest APPENDs: small e-mails, and
// voicemails rendered by um exactly as its IMAP server serves them.
func writeMbox(path string, cfg Config) error {
	var b bytes.Buffer
	rng := rand.New(rand.NewPCG(1, 2))
	sep := func(n int) { fmt.Fprintf(&b, "From sender%d@example.com Mon Mar  3 10:%02d:00 2025\n", n, n%60) }
	for i := range cfg.Emails + cfg.Voicemails {
		sep(i)
		if i%((cfg.Emails+cfg.Voicemails)/max(cfg.Voicemails, 1)) == 0 && i/max((cfg.Emails+cfg.Voicemails)/max(cfg.Voicemails, 1), 1) < cfg.Voicemails {
			size := cfg.MinSize + rng.IntN(cfg.MaxSize-cfg.MinSize+1)
			audio := wav.Noise(size*57/78, rng)
			m := um.Message{
				ID: uuid.New(), Folder: um.Inbox, UID: 1, CallerNumber: fmt.Sprintf("+4930%07d", rng.IntN(1e7)),
				Time: time.Date(2025, 3, 3, 10, i%60, 0, 0, time.UTC), Duration: time.Duration(len(audio)/16) * time.Millisecond,
				AudioType: "audio/wav", Size: int64(len(audio)),
			}
			if _, err := um.RenderEmail(m, um.RenderOptions{}).WriteTo(&b, bytes.NewReader(audio)); err != nil {
				return err
			}
		} else {
			writeEmail(&b, i)
		}
		b.WriteString("\n")
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func writeEmail(b *bytes.Buffer, n int) {
	fmt.Fprintf(b, "Date: Mon, 3 Mar 2025 10:%02d:00 +0000\r\n", n%60)
	fmt.Fprintf(b, "From: Colleague <colleague%d@example.com>\r\n", n)
	fmt.Fprintf(b, "Subject: Notes %d\r\n", n)
	fmt.Fprintf(b, "Message-ID: <stress-%d@example.com>\r\n", n)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	for i := range 10 + n%40 {
		fmt.Fprintf(b, "Line %02d: the quick brown fox jumps over the lazy dog.\r\n", i)
	}
}

func tail(b []byte) string {
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
