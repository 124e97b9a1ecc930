// Package dovecot starts a throwaway Dovecot IMAP server on 127.0.0.1 for
// tests and benchmarks: its own configuration, users from a passwd-file and
// Maildirs, all in one directory, on free ports.
//
// Dovecot is started from the binary on the machine (Debian package
// dovecot-imapd) by a root process; its processes drop to the system users
// dovecot and dovenull, so the directory must be reachable by them: Start
// makes the directories it uses world-readable, and the directories above
// Options.Dir up to os.TempDir too (t.TempDir makes them 0700).
package dovecot

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/embeddedum/um/internal/procgroup"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/embeddedum/um/internal/selfsigned"
)

// ErrNotInstalled is returned (wrapped) by Start when the dovecot binary or
// its system users are missing.
var ErrNotInstalled = errors.New("dovecot: not installed (Debian package dovecot-imapd)")

// Options configure an instance. The zero value works but has no users.
type Options struct {
	// Dir holds the configuration, the logs, the certificate and the
	// Maildirs (Dir/mail/<user>); Start creates it when missing. Default: a
	// new directory under os.TempDir, removed by Stop.
	Dir string
	// Users maps user names to their passwords.
	Users map[string]string
	// AllowPlaintext lets clients log in without TLS on the plain port.
	// By default Dovecot requires STARTTLS first.
	AllowPlaintext bool
	// HighPerformance runs Dovecot as its documentation recommends for
	// busy servers: long-lived imap-login processes (one per CPU) that each
	// serve many connections, and imap processes reused for up to 100
	// sessions. By default every connection gets a new imap-login and a new
	// imap process (Dovecot's secure default).
	HighPerformance bool
	// AuthMechanisms lists the SASL mechanisms Dovecot offers, separated by
	// spaces. Default "plain login". With "oauthbearer xoauth2" added,
	// Dovecot checks a bearer token against the passwd-file as if it were
	// the user's password, which stands in for an OAuth2 provider in tests.
	AuthMechanisms string
	// OAuth2IntrospectionURL, when set, makes Dovecot check OAUTHBEARER and
	// XOAUTH2 tokens at this RFC 7662 introspection endpoint (a POST of
	// token=...; an answer {"active": true, "username": USER} accepts the
	// token for USER) before the passwd-file, as a provider such as
	// Microsoft Entra would. Both mechanisms are offered then.
	OAuth2IntrospectionURL string
	// Capabilities, when set, replaces the capabilities Dovecot announces
	// (imap_capability), e.g. to look like another server; what the
	// capability string leaves out, clients must not use.
	Capabilities string
	// TrashName is the folder marked \Trash (SPECIAL-USE), "Trash" by
	// default; NoSpecialUse leaves the mark off, so clients must know the
	// name.
	TrashName    string
	NoSpecialUse bool
	// MailLog writes every change to a message (save, copy, flag change,
	// expunge) to dovecot.log with its folder, UID, Message-ID, flags and
	// the session's process, timestamped to the microsecond (Dovecot's
	// mail_log plugin): what each client did, in order, when a test needs
	// to find out.
	MailLog bool
	// StartTimeout bounds the wait for the IMAP port to answer. Default 20s.
	StartTimeout time.Duration
}

// ExchangeOnline returns options that make Dovecot look like the IMAP of
// Microsoft Exchange Online in what a sync engine relies on: no CONDSTORE,
// QRESYNC or SPECIAL-USE, and the deleted-items folder named "Deleted
// Items". Users and Dir are to be set by the caller.
func ExchangeOnline() Options {
	return Options{
		Capabilities:   "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+",
		AuthMechanisms: "plain login xoauth2",
		TrashName:      "Deleted Items",
		NoSpecialUse:   true,
	}
}

// OldServer returns options that make Dovecot look like an older server
// without MOVE and UIDPLUS: deleting takes COPY, \Deleted and, for want of
// UID EXPUNGE, leaves the \Deleted copy for the user's client to expunge.
func OldServer() Options {
	return Options{
		Capabilities: "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN UNSELECT CHILDREN NAMESPACE SPECIAL-USE",
	}
}

// Server is a running Dovecot instance.
type Server struct {
	// Addr is the plain IMAP listener (STARTTLS), "127.0.0.1:port".
	Addr string
	// TLSAddr is the implicit-TLS listener (imaps).
	TLSAddr string
	// Dir is Options.Dir, or the temporary directory Start made.
	Dir string
	// CertFile is the PEM certificate Dovecot presents (self-signed, for
	// localhost and 127.0.0.1); clients trust it as a CA.
	CertFile string

	rootCAs *x509.CertPool
	runDir  string // base_dir: short, because it holds Unix sockets
	ownDir  bool
	timeout time.Duration
	cmd     *exec.Cmd
	done    <-chan struct{}
}

// Start writes a configuration into the directory and starts Dovecot's
// master process in the foreground, and returns once the IMAP port answers.
// Call Stop when done.
func Start(opts Options) (*Server, error) {
	if _, err := exec.LookPath("dovecot"); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	du, err := user.Lookup("dovecot")
	if err != nil {
		return nil, fmt.Errorf("%w: system user dovecot: %v", ErrNotInstalled, err)
	}
	if _, err := user.Lookup("dovenull"); err != nil {
		return nil, fmt.Errorf("%w: system user dovenull: %v", ErrNotInstalled, err)
	}
	s := &Server{Dir: opts.Dir}
	if s.Dir == "" {
		if s.Dir, err = os.MkdirTemp("", "dovecot-"); err != nil {
			return nil, fmt.Errorf("dovecot: %w", err)
		}
		s.ownDir = true
	}
	// Unix socket paths are limited to 108 bytes; a test's temp dir can be
	// longer than that leaves room for.
	if s.runDir, err = os.MkdirTemp("", "dc"); err != nil {
		s.cleanup()
		return nil, fmt.Errorf("dovecot: %w", err)
	}
	if err := s.configure(opts, du); err != nil {
		s.cleanup()
		return nil, err
	}
	s.timeout = opts.StartTimeout
	if s.timeout <= 0 {
		s.timeout = 20 * time.Second
	}
	if err := s.start(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) configure(opts Options, du *user.User) error {
	dir, err := filepath.Abs(s.Dir)
	if err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}
	s.Dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}
	tmp := filepath.Clean(os.TempDir())
	for d := dir; d != "/" && d != tmp && strings.HasPrefix(d, tmp); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			return fmt.Errorf("dovecot: %w", err)
		}
	}
	if err := os.Chmod(s.runDir, 0o755); err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}
	uid, _ := strconv.Atoi(du.Uid)
	gid, _ := strconv.Atoi(du.Gid)
	mail := filepath.Join(dir, "mail")
	if err := os.MkdirAll(mail, 0o755); err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}
	if err := os.Chown(mail, uid, gid); err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}

	cert, err := selfsigned.New(nil)
	if err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}
	s.rootCAs = cert.Pool()
	s.CertFile = filepath.Join(dir, "cert.pem")
	var pw strings.Builder
	names := make([]string, 0, len(opts.Users))
	for u := range opts.Users {
		names = append(names, u)
	}
	sort.Strings(names)
	for _, u := range names {
		p := opts.Users[u]
		if strings.ContainsAny(u+p, ":\n\r") {
			return fmt.Errorf("dovecot: user %q or its password has ':' or a line break", u)
		}
		fmt.Fprintf(&pw, "%s:{PLAIN}%s\n", u, p)
	}
	for name, data := range map[string][]byte{
		"cert.pem": cert.CertPEM,
		"key.pem":  cert.KeyPEM,
		"passwd":   []byte(pw.String()),
	} {
		// The key is read by the master, which runs as root.
		perm := os.FileMode(0o644)
		if name == "key.pem" {
			perm = 0o600
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, perm); err != nil {
			return fmt.Errorf("dovecot: %w", err)
		}
	}

	imapPort, err := freePort()
	if err != nil {
		return err
	}
	tlsPort, err := freePort()
	if err != nil {
		return err
	}
	s.Addr = net.JoinHostPort("127.0.0.1", imapPort)
	s.TLSAddr = net.JoinHostPort("127.0.0.1", tlsPort)

	ssl, plain := "required", "yes"
	if opts.AllowPlaintext {
		ssl, plain = "yes", "no"
	}
	mechs := opts.AuthMechanisms
	if mechs == "" {
		mechs = "plain login"
	}
	oauth := ""
	if opts.OAuth2IntrospectionURL != "" {
		if !strings.Contains(mechs, "xoauth2") && !strings.Contains(mechs, "oauthbearer") {
			mechs += " oauthbearer xoauth2"
		}
		ext := "introspection_mode = post\nintrospection_url = " + opts.OAuth2IntrospectionURL +
			"\nforce_introspection = yes\nusername_attribute = username\nactive_attribute = active\nactive_value = true\n"
		if err := os.WriteFile(filepath.Join(dir, "oauth2.conf.ext"), []byte(ext), 0o644); err != nil {
			return fmt.Errorf("dovecot: %w", err)
		}
		// Tried first; a token it refuses, and every password, fall
		// through to the passwd-file.
		oauth = "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = " + filepath.Join(dir, "oauth2.conf.ext") +
			"\n  result_failure = continue\n  result_internalfail = continue\n}\n"
	}
	capability := ""
	if opts.Capabilities != "" {
		capability = "imap_capability = " + opts.Capabilities + "\n"
	}
	trash := opts.TrashName
	if trash == "" {
		trash = "Trash"
	}
	specialUse := "    special_use = \\Trash\n"
	if opts.NoSpecialUse {
		specialUse = ""
	}
	mailLog := ""
	if opts.MailLog {
		mailLog = `log_timestamp = "%Y-%m-%d %H:%M:%S.%{usecs} "
mail_plugins = $mail_plugins notify mail_log
mail_log_prefix = "%s(%u)<%{pid}><%{session}>: "
plugin {
  mail_log_events = delete undelete expunge copy save flag_change
  mail_log_fields = uid box msgid flags
}
`
	}
	login, imap := "", ""
	if opts.HighPerformance {
		n := runtime.NumCPU()
		login = fmt.Sprintf("  service_count = 0\n  process_min_avail = %d\n  vsz_limit = 1G\n  client_limit = 4000\n", n)
		imap = "  service_count = 100\n"
	}
	conf := `protocols = imap
listen = 127.0.0.1
base_dir = ` + s.runDir + `
state_dir = ` + s.runDir + `/state
instance_name = um-dovecot-` + imapPort + `
log_path = ` + dir + `/dovecot.log
info_log_path = ` + dir + `/dovecot.log
ssl = ` + ssl + `
disable_plaintext_auth = ` + plain + `
ssl_cert = <` + dir + `/cert.pem
ssl_key = <` + dir + `/key.pem
ssl_min_protocol = TLSv1.2
auth_mechanisms = ` + mechs + `
auth_failure_delay = 0
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:` + mail + `/%u
mail_uid = ` + du.Uid + `
mail_gid = ` + du.Gid + `
mail_max_userip_connections = 10000
` + capability + mailLog + oauth + `passdb {
  driver = passwd-file
  args = scheme=PLAIN ` + dir + `/passwd
}
userdb {
  driver = static
  args = home=` + mail + `/%u
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox "` + trash + `" {
` + specialUse + `    auto = create
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = ` + imapPort + `
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = ` + tlsPort + `
    ssl = yes
  }
` + login + `}
service imap {
  process_limit = 4096
` + imap + `}
default_client_limit = 10000
default_process_limit = 4096
`
	if err := os.WriteFile(filepath.Join(dir, "dovecot.conf"), []byte(conf), 0o644); err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}
	return nil
}

func (s *Server) start() error {
	cmd := exec.Command("dovecot", "-F", "-c", filepath.Join(s.Dir, "dovecot.conf"))
	done, err := procgroup.Start(cmd, filepath.Join(s.Dir, "stderr.log"))
	if err != nil {
		return fmt.Errorf("dovecot: %w", err)
	}
	s.cmd, s.done = cmd, done
	dial := func() (net.Conn, error) { return net.DialTimeout("tcp", s.Addr, time.Second) }
	if err := procgroup.AwaitGreeting(dial, done, s.timeout); err != nil {
		return fmt.Errorf("dovecot on %s: %w:\n%s", s.Addr, err, s.Logs())
	}
	return nil
}

// PID returns the process ID of Dovecot's master process, the root of its
// process tree; 0 after Stop.
func (s *Server) PID() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// TLSConfig returns a client configuration that trusts the instance's
// certificate.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.rootCAs, ServerName: "localhost"}
}

// MailDir returns the Maildir of user.
func (s *Server) MailDir(user string) string { return filepath.Join(s.Dir, "mail", user) }

// Logs returns Dovecot's log and what it wrote to stderr, for error reports.
func (s *Server) Logs() string {
	a, _ := os.ReadFile(filepath.Join(s.Dir, "stderr.log"))
	b, _ := os.ReadFile(filepath.Join(s.Dir, "dovecot.log"))
	return string(a) + string(b)
}

// Stop shuts Dovecot down (SIGTERM to its process group, SIGKILL after 10
// seconds) and removes the directories Start made. It may be called more
// than once.
func (s *Server) Stop() {
	if s.cmd != nil {
		procgroup.Stop(s.cmd.Process.Pid, s.done)
		s.cmd = nil
	}
	s.cleanup()
}

// Kill ends Dovecot with SIGKILL to its whole process group, as a crash or a
// power loss of the server would, and waits for the master to exit. The
// configuration, ports and Maildirs stay for Restart. It does nothing when
// Dovecot is not running.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	procgroup.Kill(s.cmd.Process.Pid, s.done)
	s.cmd = nil
}

// Restart starts Dovecot again after Kill, with the same configuration,
// ports and Maildirs, and returns once the IMAP port answers. The lock
// files the killed processes left in the Maildirs are removed first, as a
// restart script would: Dovecot itself would wait minutes before it takes
// them for stale, and every command touching such a folder would hang.
func (s *Server) Restart() error {
	if s.cmd != nil {
		return errors.New("dovecot: Restart while running")
	}
	if s.runDir == "" {
		return errors.New("dovecot: Restart after Stop")
	}
	filepath.WalkDir(filepath.Join(s.Dir, "mail"), func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(d.Name(), ".lock") {
			os.Remove(path)
		}
		return nil
	})
	return s.start()
}

func (s *Server) cleanup() {
	if s.runDir != "" {
		os.RemoveAll(s.runDir)
		s.runDir = ""
	}
	if s.ownDir {
		os.RemoveAll(s.Dir)
		s.ownDir = false
	}
}

// TreeRSS returns the summed resident memory, in bytes, of the process pid
// and all its descendants, read from /proc (Linux only). Shared pages count
// once per process, as ps and top show them.
func TreeRSS(pid int) (int64, error) { return TreeStatus(pid, "VmRSS") }

// TreeStatus returns field of /proc/PID/status (a size in kB: VmRSS,
// RssAnon, RssFile), in bytes, summed over the process pid and its
// descendants.
func TreeStatus(pid int, field string) (int64, error) {
	var total int64
	seen := false
	for _, p := range tree(pid) {
		if v, err := StatusField(p, field); err == nil {
			total += v
			seen = true
		}
	}
	if !seen {
		return 0, fmt.Errorf("dovecot: process %d: %w", pid, os.ErrNotExist)
	}
	return total, nil
}

// TreePSS returns the summed proportional set size, in bytes, of the
// process pid and its descendants (Pss of /proc/PID/smaps_rollup): each
// shared page counts as its share among the processes mapping it, so a
// tree of processes sharing libraries and a single process compare fairly,
// which TreeRSS's sum does not.
func TreePSS(pid int) (int64, error) {
	var total int64
	seen := false
	for _, p := range tree(pid) {
		if v, err := rollupField(p, "Pss"); err == nil {
			total += v
			seen = true
		}
	}
	if !seen {
		return 0, fmt.Errorf("dovecot: process %d: %w", pid, os.ErrNotExist)
	}
	return total, nil
}

// TreeCPU returns the CPU time (user and system) used so far by the process
// pid and all its descendants, those that ended and were waited for
// included, read from /proc (Linux only). The difference of two calls is
// the CPU the tree used in between.
func TreeCPU(pid int) (time.Duration, error) {
	var ticks int64
	seen := false
	for _, p := range tree(pid) {
		f, ok := statFields(p)
		// utime, stime, cutime, cstime are fields 14-17 of stat; f starts
		// at field 3.
		if !ok || len(f) < 15 {
			continue
		}
		for _, s := range f[11:15] {
			n, _ := strconv.ParseInt(s, 10, 64)
			ticks += n
		}
		seen = true
	}
	if !seen {
		return 0, fmt.Errorf("dovecot: process %d: %w", pid, os.ErrNotExist)
	}
	// Linux reports USER_HZ ticks, 100 a second on every architecture
	// Go supports.
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// tree returns pid and its descendants.
func tree(pid int) []int {
	children := make(map[int][]int)
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, ok := statFields(p); ok && len(f) >= 2 {
			if pp, err := strconv.Atoi(f[1]); err == nil {
				children[pp] = append(children[pp], p)
			}
		}
	}
	var out []int
	for stack := []int{pid}; len(stack) > 0; {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		out = append(out, p)
		stack = append(stack, children[p]...)
	}
	return out
}

// statFields returns the fields of /proc/<pid>/stat after the command
// name: state, ppid, ...
func statFields(pid int) ([]string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, false
	}
	// The command name in parentheses may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	return strings.Fields(string(b[i+1:])), true
}

// StatusField returns a memory field of /proc/<pid>/status (such as VmRSS or
// VmHWM) in bytes.
func StatusField(pid int, field string) (int64, error) {
	return kBField(pid, "status", field)
}

func rollupField(pid int, field string) (int64, error) {
	return kBField(pid, "smaps_rollup", field)
}

// kBField reads "field: N kB" from /proc/<pid>/<file>.
func kBField(pid int, file, field string) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/" + file)
	if err != nil {
		return 0, fmt.Errorf("dovecot: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		fs := strings.Fields(val)
		if len(fs) < 1 {
			break
		}
		kb, err := strconv.ParseInt(fs[0], 10, 64)
		if err != nil {
			break
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("dovecot: %s of process %d: %w", field, pid, os.ErrNotExist)
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("dovecot: %w", err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}
