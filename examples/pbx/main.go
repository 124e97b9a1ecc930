// Command pbx is a demo PBX built on um: it serves voice mailboxes over
// IMAP to ordinary mail clients, reads phone actions (deposit, play, delete)
// on standard input and prints every message-waiting lamp change.
//
// Run it with
//
//	go run ./examples/pbx
//
// and point a mail client at 127.0.0.1 port 1143 (STARTTLS) or 1993 (TLS);
// see README.md. Standard output carries only the command protocol (lines
// starting "ok", "error:" or "MWI"); the startup banner goes to standard
// error.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/upstream"
	"github.com/embeddedum/um/wav"
)

func main() {
	// A background job that reads the terminal would be stopped by
	// SIGTTIN; ignored, the read fails instead and the PBX keeps serving.
	signal.Ignore(syscall.SIGTTIN)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "pbx:", err)
		}
		os.Exit(1)
	}
}

// syncTimeout bounds the sync command.
const syncTimeout = 30 * time.Second

// depositLength is the length of the tone a deposit command records.
const depositLength = 3 * time.Second

// user is a provisioned mailbox and its IMAP password.
type user struct{ box, password string }

type userFlag []user

func (u *userFlag) String() string { return boxNames(*u, func(x user) string { return x.box }) }

func (u *userFlag) Set(v string) error {
	box, pass, ok := strings.Cut(v, ":")
	if !ok || box == "" || pass == "" {
		return errors.New("want BOX:PASSWORD")
	}
	if strings.ContainsAny(box, " \t@") {
		return fmt.Errorf("mailbox %q: no spaces or @ in mailbox names", box)
	}
	if err := notTwice(*u, func(x user) string { return x.box }, box); err != nil {
		return err
	}
	*u = append(*u, user{box, pass})
	return nil
}

// boxNames lists the voice mailboxes of a per-mailbox flag's values, for
// its String.
func boxNames[T any](items []T, box func(T) string) string {
	names := make([]string, len(items))
	for i, x := range items {
		names[i] = box(x)
	}
	return strings.Join(names, ",")
}

// notTwice refuses a per-mailbox flag's value for a mailbox that has one.
func notTwice[T any](items []T, box func(T) string, name string) error {
	for _, x := range items {
		if box(x) == name {
			return fmt.Errorf("mailbox %q given twice", name)
		}
	}
	return nil
}

type config struct {
	data         string
	imapAddr     string
	imapsAddr    string
	users        userFlag
	insecureAuth bool
	certFile     string
	keyFile      string
	upstreams    upstreamFlag
	upstreamFile string
	argvSecrets  []string // mailboxes whose -upstream password is in argv
	upstreamCA   string
	forwards     forwardFlag
	smtpURL      string
	smtpFile     string
	smtpCA       string
	forwardFrom  string
	smtp         smtpAccount // from -smtp or -smtp-file, once checked
	// smtpArgvSecret: the -smtp password is on the command line.
	smtpArgvSecret bool
	nodeDefaulted  bool // -pg without -node
	pg             string
	node           string
	limits         limits
	httpAddr       string
	sipAddr        string
	mwiNotify      notifyFlag
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := config{mwiNotify: notifyFlag{}}
	fs := flag.NewFlagSet("pbx", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.data, "data", "./um-data", "store `directory`, reused across runs")
	fs.StringVar(&c.imapAddr, "imap", "127.0.0.1:1143", "plain+STARTTLS IMAP listen `address` (empty: none)")
	fs.StringVar(&c.imapsAddr, "imaps", "127.0.0.1:1993", "implicit-TLS IMAP listen `address` (empty: none)")
	fs.Var(&c.users, "user", "provision mailbox `BOX:PASSWORD` (repeatable; default 1001 and 1002 with generated passwords)")
	fs.BoolVar(&c.insecureAuth, "insecure-auth", false, "allow LOGIN without TLS (loopback experiments only)")
	fs.StringVar(&c.certFile, "cert", "", "TLS certificate `file` (PEM); default a self-signed one in the data directory")
	fs.StringVar(&c.keyFile, "key", "", "TLS private key `file` (PEM)")
	fs.Var(&c.upstreams, "upstream", "mirror mailbox BOX into a mail account: `BOX=imaps://USER:PASSWORD@HOST[:PORT][/FOLDER]` (imap:// for STARTTLS; repeatable)")
	fs.StringVar(&c.upstreamFile, "upstream-file", "", "read the -upstream accounts from `FILE`, one \"BOX URL\" a line (keeps passwords out of the command line; must not be readable by others)")
	fs.StringVar(&c.upstreamCA, "upstream-ca", "", "PEM `file` of the CA that signed the -upstream servers' certificates (default: the system's)")
	fs.Var(&c.forwards, "forward", "forward mailbox BOX's voicemail by e-mail: `BOX=ADDRESS` (repeatable; needs -smtp or -smtp-file; a mailbox is forwarded or mirrored with -upstream, not both)")
	fs.StringVar(&c.smtpURL, "smtp", "", "send -forward e-mail through `URL`: smtp://USER:PASSWORD@HOST[:PORT] (STARTTLS, port 587) or smtps://... (TLS, port 465); USER:PASSWORD@ may be left out for a relay")
	fs.StringVar(&c.smtpFile, "smtp-file", "", "read the -smtp URL from `FILE`, on a line of its own (keeps the password out of the command line; must not be readable by others)")
	fs.StringVar(&c.smtpCA, "smtp-ca", "", "PEM `file` of the CA that signed the -smtp server's certificate (default: the system's)")
	fs.StringVar(&c.forwardFrom, "forward-from", "", "envelope sender of -forward e-mail, where bounces go: an `ADDRESS` (default the -smtp user when it is an address, else voicemail@localhost)")
	fs.StringVar(&c.pg, "pg", "", "keep the mailboxes in PostgreSQL at `DSN` (postgres://...) instead of the data directory; PBX nodes on one database share them")
	fs.StringVar(&c.node, "node", "", "this PBX's `name` in a cluster sharing -pg (default host-pid)")
	c.limits.flags(fs)
	fs.StringVar(&c.httpAddr, "http", "127.0.0.1:8080", "serve the web console and Prometheus /metrics at `address` (empty: none; no login, keep it on loopback)")
	fs.StringVar(&c.sipAddr, "sip", "", "serve SIP message-waiting (SUBSCRIBE/NOTIFY, RFC 3842) on UDP and TCP `address` (empty: none)")
	fs.Var(c.mwiNotify, "mwi-notify", "send unsolicited NOTIFYs of mailbox BOX's lamp to `BOX=sip:CONTACT` (repeatable)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pbx [flags]\n\nA demo PBX: voice mailboxes served over IMAP, phone commands on standard input.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	for _, u := range c.upstreams {
		c.argvSecrets = append(c.argvSecrets, u.Mailbox)
	}
	if c.upstreamFile != "" {
		if err := loadUpstreamFile(c.upstreamFile, &c.upstreams); err != nil {
			return nil, err
		}
	}
	if err := c.checkForward(); err != nil {
		return nil, err
	}
	if err := c.limits.check(); err != nil {
		return nil, err
	}
	if c.node != "" && c.pg == "" {
		return nil, errors.New("-node goes with -pg")
	}
	if c.pg != "" && c.node == "" {
		c.node, c.nodeDefaulted = defaultNode(), true
	}
	if c.imapAddr == "" && c.imapsAddr == "" {
		return nil, errors.New("-imap and -imaps are both empty: nothing to serve")
	}
	return &c, nil
}

// run is the whole program: it serves until ctx is done or stdin ends, then
// shuts down and returns.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	// Log lines come from the IMAP server, the sync engine and um's own
	// goroutines at once.
	stderr = &lockedWriter{w: stderr}
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.data, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	users := cfg.users
	if len(users) == 0 {
		if users, err = defaultUsers(cfg.data); err != nil {
			return err
		}
	}

	out := &output{w: stdout}
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "pbx: "+format+"\n", args...) }
	store, err := openStore(ctx, cfg, filepath.Join(cfg.data, "store"), logf)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := store.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close store: %w", cerr)
		}
	}()
	reg, m, err := newMetrics(cfg)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	lamps, err := newLamps(cfg, stderr)
	if err != nil {
		return err
	}
	// The store is timed for /metrics; um finds its change feed and
	// counters through the wrapper's Unwrap. The phone's backup and check
	// use the store itself.
	svc, err := um.New(m.WrapStore(store), cfg.limits.apply(&um.Options{MWI: chainMWI(out.mwi, lamps), Logger: logger, Node: cfg.node, Observer: m}))
	if err != nil {
		return err
	}
	defer svc.Close()
	for _, u := range users {
		if _, err := svc.EnsureMailbox(ctx, u.box); err != nil {
			return err
		}
	}

	if err := releaseLeftModes(ctx, svc, cfg, logf); err != nil {
		return err
	}
	fw, err := startForward(ctx, svc, cfg, logger, logf)
	if err != nil {
		return err
	}
	if fw != nil {
		// Before svc.Close: what was not sent yet is sent by the next
		// owner, from the state in the store.
		defer fw.Close()
	}
	engine, err := startUpstream(ctx, svc, cfg, logf)
	if err != nil {
		return err
	}
	if engine != nil {
		// Before svc.Close: changes not yet carried over are picked up at the
		// next start from the engine's state.
		defer engine.Close()
	}

	cert, err := loadCert(cfg.data, cfg.certFile, cfg.keyFile)
	if err != nil {
		return err
	}
	srv, err := startIMAP(svc, cfg, users, cert, logf)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if serr := srv.Shutdown(sctx); serr != nil && err == nil {
			err = fmt.Errorf("shut down IMAP: %w", serr)
		}
		// Changes the last sessions made still get their MWI line.
		svc.FlushMWI()
	}()
	banner(stderr, cfg, users, cert, srv)
	web, err := startWeb(cfg, svc, reg, m, srv, engine, fw)
	if err != nil {
		return err
	}
	if web != nil {
		fmt.Fprintf(stderr, "Web console and Prometheus metrics: http://%s/ and http://%s/metrics\n", web.addr, web.addr)
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if herr := web.shutdown(sctx); herr != nil && err == nil {
				err = fmt.Errorf("shut down -http: %w", herr)
			}
		}()
	}
	stopSIP, err := startSIP(svc, lamps, cfg, stderr)
	if err != nil {
		return err
	}
	defer stopSIP()

	p := &phone{svc: svc, out: out, upstream: engine, store: store}
	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 4096), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		readErr <- sc.Err()
	}()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(stderr, "pbx: signal received, shutting down")
			return nil
		case err := <-readErr:
			if err != nil {
				// The input is gone but not ended (a background job's
				// terminal): keep serving until a signal.
				fmt.Fprintf(stderr, "pbx: standard input: %v; serving until SIGINT or SIGTERM\n", err)
				readErr = nil
				continue
			}
			fmt.Fprintln(stderr, "pbx: end of input, shutting down")
			return nil
		case line := <-lines:
			p.handle(ctx, line)
		}
	}
}

// output serializes writes to standard output, so that an MWI line never
// lands inside a command's answer.
type output struct {
	mu sync.Mutex
	w  io.Writer
}

// write writes text, one or more whole lines, in one piece.
func (o *output) write(text string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	io.WriteString(o.w, text)
}

func (o *output) mwi(st um.MWIState) {
	lamp := "off"
	if st.Waiting() {
		lamp = "on"
	}
	o.write(fmt.Sprintf("MWI %s %s %s\n", st.Mailbox, lamp, st))
}

// lockedWriter makes each Write whole with respect to the others.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// phone runs the commands read from standard input.
type phone struct {
	svc      *um.Service
	out      *output
	upstream *upstream.Engine // nil without -upstream
	store    um.Store
}

// handle runs one command line and writes its answer. Empty lines and lines
// starting with # are skipped without an answer, so scripts can carry
// comments.
func (p *phone) handle(ctx context.Context, line string) {
	f := strings.Fields(line)
	if len(f) == 0 || strings.HasPrefix(f[0], "#") {
		return
	}
	answer, err := p.exec(ctx, f)
	// The MWI lines a command causes come before its answer: a script that
	// has read "ok" has seen every lamp change it made.
	p.svc.FlushMWI()
	if err != nil {
		p.out.write("error: " + oneLine(err.Error()) + "\n")
		return
	}
	p.out.write(answer)
}

var usage = map[string]string{
	"deposit":      "deposit BOX CALLER [NAME...]",
	"urgent":       "urgent BOX CALLER [NAME...]",
	"deposit-file": "deposit-file BOX CALLER FILE.wav",
	"list":         "list BOX [FOLDER]",
	"heard":        "heard BOX UID",
	"unheard":      "unheard BOX UID",
	"delete":       "delete BOX UID",
	"undelete":     "undelete BOX UID",
	"mwi":          "mwi BOX",
	"sync":         "sync BOX",
	"backup":       "backup DIR",
	"check":        "check",
	"help":         "help",
}

func (p *phone) exec(ctx context.Context, f []string) (string, error) {
	cmd, args := f[0], f[1:]
	use, ok := usage[cmd]
	if !ok {
		return "", fmt.Errorf("unknown command %q (try help)", cmd)
	}
	bad := fmt.Errorf("usage: %s", use)
	switch cmd {
	case "help":
		names := make([]string, 0, len(usage))
		for name := range usage {
			names = append(names, name)
		}
		sort.Strings(names)
		return "ok " + strings.Join(names, " ") + "\n", nil
	case "deposit", "urgent":
		if len(args) < 2 {
			return "", bad
		}
		mb, err := p.mailbox(ctx, args[0])
		if err != nil {
			return "", err
		}
		m, err := mb.Deposit(ctx, um.Deposit{
			Audio:        bytes.NewReader(wav.Tone(depositLength)),
			AudioType:    "audio/wav",
			CallerNumber: args[1],
			CallerName:   strings.Join(args[2:], " "),
			Duration:     depositLength,
			Urgent:       cmd == "urgent",
		})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("ok %d\n", m.UID), nil
	case "deposit-file":
		if len(args) < 3 {
			return "", bad
		}
		mb, err := p.mailbox(ctx, args[0])
		if err != nil {
			return "", err
		}
		name := strings.Join(args[2:], " ")
		audio, err := readWAV(name)
		if err != nil {
			return "", err
		}
		d, err := wav.Duration(audio)
		if err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
		m, err := mb.Deposit(ctx, um.Deposit{
			Audio:        bytes.NewReader(audio),
			AudioType:    "audio/wav",
			CallerNumber: args[1],
			Duration:     d,
		})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("ok %d\n", m.UID), nil
	case "list":
		if len(args) < 1 {
			return "", bad
		}
		mb, err := p.mailbox(ctx, args[0])
		if err != nil {
			return "", err
		}
		folder := um.Inbox
		if len(args) > 1 {
			folder = strings.Join(args[1:], " ")
		}
		if _, err := mb.Folder(ctx, folder); errors.Is(err, um.ErrNotFound) {
			return "", fmt.Errorf("mailbox %s has no folder %q", mb.Name(), folder)
		} else if err != nil {
			return "", err
		}
		msgs, err := mb.List(ctx, folder)
		if err != nil {
			return "", err
		}
		var b strings.Builder
		fmt.Fprintf(&b, "ok %d\n", len(msgs))
		for _, m := range msgs {
			b.WriteString(listLine(m))
		}
		return b.String(), nil
	case "heard", "unheard", "delete", "undelete":
		if len(args) != 2 {
			return "", bad
		}
		mb, err := p.mailbox(ctx, args[0])
		if err != nil {
			return "", err
		}
		folder := um.Inbox
		if cmd == "undelete" {
			folder = um.Trash
		}
		m, err := p.message(ctx, mb, folder, args[1])
		if err != nil {
			return "", err
		}
		if m, err = act(ctx, mb, m.ID, cmd); err != nil {
			return "", err
		}
		if cmd == "undelete" {
			return fmt.Sprintf("ok %d\n", m.UID), nil
		}
		return "ok\n", nil
	case "mwi":
		if len(args) != 1 {
			return "", bad
		}
		mb, err := p.mailbox(ctx, args[0])
		if err != nil {
			return "", err
		}
		st, err := mb.MWI(ctx)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("ok %s\n", st), nil
	case "sync":
		if len(args) != 1 {
			return "", bad
		}
		if p.upstream == nil || !p.upstream.Status(args[0]).Configured {
			return "", fmt.Errorf("mailbox %s is not mirrored (see -upstream)", args[0])
		}
		sctx, cancel := context.WithTimeout(ctx, syncTimeout)
		defer cancel()
		if err := syncWait(sctx, p.upstream, args[0]); err != nil {
			return "", err
		}
		return "ok\n", nil
	case "backup", "check":
		return p.storeCommand(ctx, cmd, args, bad)
	}
	return "", fmt.Errorf("command %q not implemented", cmd)
}

func (p *phone) mailbox(ctx context.Context, box string) (*um.Mailbox, error) {
	mb, err := p.svc.Mailbox(ctx, box)
	if errors.Is(err, um.ErrNotFound) {
		return nil, fmt.Errorf("no mailbox %s", box)
	}
	return mb, err
}

func (p *phone) message(ctx context.Context, mb *um.Mailbox, folder, uidText string) (um.Message, error) {
	uid, err := strconv.ParseUint(uidText, 10, 32)
	if err != nil || uid == 0 {
		return um.Message{}, fmt.Errorf("bad UID %q: want a positive number", uidText)
	}
	m, err := mb.ByUID(ctx, folder, um.UID(uid))
	if errors.Is(err, um.ErrNotFound) {
		return um.Message{}, fmt.Errorf("no message with UID %d in %s of %s", uid, folder, mb.Name())
	}
	return m, err
}

// listLine formats a message for the list command: for voicemail
// "<uid> new|heard [urgent] <caller> <seconds>s [<caller's name>]", urgent
// being the message's \Flagged (a mail client's star); for an e-mail a mail
// client filed in a user folder "<uid> e-mail". Fields are only ever added
// at the end, so scripts that read the first ones keep working.
func listLine(m um.Message) string {
	if m.Raw {
		return fmt.Sprintf("%d e-mail\n", m.UID)
	}
	state := "new"
	if m.Heard() {
		state = "heard"
	}
	if m.IsUrgent() {
		state += " urgent"
	}
	caller := m.CallerNumber
	if caller == "" {
		caller = "-" // an unknown caller
	}
	secs := int64((m.Duration + time.Second/2) / time.Second)
	line := fmt.Sprintf("%d %s %s %ds", m.UID, state, caller, secs)
	if name := oneLine(m.CallerName); name != "" {
		line += " " + name
	}
	return line + "\n"
}

// maxWAV bounds deposit-file: voicemail is minutes, not hours.
const maxWAV = 64 << 20

func readWAV(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxWAV+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxWAV {
		return nil, fmt.Errorf("%s: larger than %d MB", name, maxWAV>>20)
	}
	return b, nil
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// defaultUsers returns mailboxes 1001 and 1002 with the passwords kept in
// the data directory, generating them on the first run.
func defaultUsers(dir string) ([]user, error) {
	name := filepath.Join(dir, "passwords")
	b, err := os.ReadFile(name)
	if err == nil {
		var users []user
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 2 {
				users = append(users, user{f[0], f[1]})
			}
		}
		if len(users) > 0 {
			return users, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	users := []user{{"1001", newPassword()}, {"1002", newPassword()}}
	var text strings.Builder
	for _, u := range users {
		fmt.Fprintf(&text, "%s %s\n", u.box, u.password)
	}
	if err := writeFileAtomic(name, []byte(text.String()), 0o600); err != nil {
		return nil, fmt.Errorf("save passwords: %w", err)
	}
	return users, nil
}

// newPassword returns 12 random characters that are easy to read and type.
func newPassword() string {
	const alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
	b := make([]byte, 12)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// authenticator checks IMAP logins against the provisioned users. The login
// name is the mailbox number, optionally with any @domain after it.
func authenticator(users []user) func(ctx context.Context, username, password string) (string, error) {
	return func(ctx context.Context, username, password string) (string, error) {
		box, _, _ := strings.Cut(username, "@")
		for _, u := range users {
			if u.box == box && subtle.ConstantTimeCompare([]byte(u.password), []byte(password)) == 1 {
				return u.box, nil
			}
		}
		return "", errors.New("pbx: wrong user name or password")
	}
}
