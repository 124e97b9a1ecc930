// Package cyrus starts a throwaway Cyrus IMAP server on 127.0.0.1 for
// tests: a second real server, with its own expunge and Trash semantics,
// besides Dovecot. Its configuration, databases and spool live in one
// directory; nothing of the system's Cyrus is used but the binaries.
//
// The binaries come from Debian's cyrus-common (the master process and
// tools) and cyrus-imapd (imapd). cyrus-imapd conflicts with Dovecot's
// package, so scripts/test.sh unpacks it into /var/tmp/um-cyrus without
// installing it; Start looks there, in /usr/lib/cyrus/bin, and at
// $UM_CYRUS_IMAPD. Cyrus's processes run as the system user cyrus, so Start
// hands the directory to it.
package cyrus

import (
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
	"strconv"
	"strings"
	"time"

	"github.com/embeddedum/um/internal/selfsigned"
)

// ErrNotInstalled is returned (wrapped) by Start when a binary or the system
// user cyrus is missing.
var ErrNotInstalled = errors.New("cyrus: not installed (Debian packages cyrus-common and cyrus-imapd, see scripts/test.sh)")

const masterBin = "/usr/lib/cyrus/bin/master"

// imapdPaths are where imapd is looked for, in order.
func imapdPaths() []string {
	p := []string{"/usr/lib/cyrus/bin/imapd", "/var/tmp/um-cyrus/usr/lib/cyrus/bin/imapd"}
	if e := os.Getenv("UM_CYRUS_IMAPD"); e != "" {
		p = append([]string{e}, p...)
	}
	return p
}

// Options configure an instance.
type Options struct {
	// Dir holds everything; Start creates it. Required.
	Dir string
	// Users are the accounts to create. Any password logs them in: this
	// server stands in for a mail server in tests of what happens after
	// the login.
	Users []string
}

// Server is a running Cyrus.
type Server struct {
	// TLSAddr is the implicit-TLS listener, "127.0.0.1:port".
	TLSAddr string
	// Dir is Options.Dir.
	Dir string

	pool *x509.CertPool
	cmd  *exec.Cmd
	done <-chan struct{}
}

// Start configures Cyrus in opts.Dir and starts its master process, and
// returns once the IMAP port answers. The users' INBOX and Trash (marked
// \Trash) are created at their first login.
func Start(opts Options) (*Server, error) {
	if _, err := os.Stat(masterBin); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	imapd := ""
	for _, p := range imapdPaths() {
		if _, err := os.Stat(p); err == nil {
			imapd = p
			break
		}
	}
	if imapd == "" {
		return nil, fmt.Errorf("%w: no imapd in %v", ErrNotInstalled, imapdPaths())
	}
	cu, err := user.Lookup("cyrus")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	uid, _ := strconv.Atoi(cu.Uid)
	gid, _ := strconv.Atoi(cu.Gid)
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir}
	for _, sub := range []string{"conf", "conf/proc", "conf/lock", "conf/socket", "conf/db", "spool"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o750); err != nil {
			return nil, fmt.Errorf("cyrus: %w", err)
		}
	}
	tmp := filepath.Clean(os.TempDir())
	for d := dir; d != "/" && d != tmp && strings.HasPrefix(d, tmp); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	cert, err := selfsigned.New(nil)
	if err != nil {
		return nil, fmt.Errorf("cyrus: %w", err)
	}
	s.pool = cert.Pool()
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), cert.CertPEM, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "key.pem"), cert.KeyPEM, 0o600); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s.TLSAddr = net.JoinHostPort("127.0.0.1", port)
	conf := filepath.Join(dir, "imapd.conf")
	imapdConf := `configdirectory: ` + dir + `/conf
partition-default: ` + dir + `/spool
defaultpartition: default
proc_path: ` + dir + `/conf/proc
mboxname_lockpath: ` + dir + `/conf/lock
idlesocket: ` + dir + `/conf/socket/idle
notifysocket: ` + dir + `/conf/socket/notify
lmtpsocket: ` + dir + `/conf/socket/lmtp
servername: localhost
admins: cyrusadmin
altnamespace: yes
unixhierarchysep: yes
sasl_pwcheck_method: alwaystrue
sasl_mech_list: PLAIN LOGIN
allowplaintext: no
tls_server_cert: ` + dir + `/cert.pem
tls_server_key: ` + dir + `/key.pem
autocreate_post: 1
autocreate_quota: 0
autocreate_inbox_folders: Trash
autocreate_subscribe_folders: Trash
xlist-trash: Trash
syslog_prefix: um-cyrus-` + port + `
`
	master := `START {
  recover cmd="/usr/lib/cyrus/bin/ctl_cyrusdb -r -C ` + conf + `"
}
SERVICES {
  imaps cmd="` + imapd + ` -s -C ` + conf + `" listen="127.0.0.1:` + port + `" prefork=0
}
EVENTS {
}
DAEMON {
}
`
	if err := os.WriteFile(conf, []byte(imapdConf), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "cyrus.conf"), []byte(master), 0o644); err != nil {
		return nil, err
	}
	if err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	}); err != nil {
		return nil, fmt.Errorf("cyrus: %w", err)
	}
	if err := s.start(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) start() error {
	cmd := exec.Command(masterBin, "-C", filepath.Join(s.Dir, "imapd.conf"), "-M", filepath.Join(s.Dir, "cyrus.conf"),
		"-p", filepath.Join(s.Dir, "master.pid"), "-D")
	done, err := procgroup.Start(cmd, filepath.Join(s.Dir, "stderr.log"))
	if err != nil {
		return fmt.Errorf("cyrus: %w", err)
	}
	s.cmd, s.done = cmd, done
	dial := func() (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", s.TLSAddr, s.TLSConfig())
	}
	if err := procgroup.AwaitGreeting(dial, done, 20*time.Second); err != nil {
		return fmt.Errorf("cyrus on %s: %w:\n%s", s.TLSAddr, err, s.Logs())
	}
	return nil
}

// TLSConfig returns a client configuration that trusts the instance.
func (s *Server) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: s.pool, ServerName: "localhost"}
}

// Logs returns what Cyrus wrote to stderr (it logs the rest to syslog).
func (s *Server) Logs() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "stderr.log"))
	return string(b)
}

// Kill ends Cyrus with SIGKILL to its process group, as a crash would, and
// waits until its port is closed. Restart starts it again.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	procgroup.Kill(s.cmd.Process.Pid, s.done)
	s.cmd = nil
}

// Restart starts Cyrus again after Kill, with its data.
func (s *Server) Restart() error {
	if s.cmd != nil {
		return errors.New("cyrus: Restart while running")
	}
	os.Remove(filepath.Join(s.Dir, "master.pid"))
	return s.start()
}

// Stop ends Cyrus (SIGTERM, SIGKILL after 10 s). It may be called more than
// once.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	procgroup.Stop(s.cmd.Process.Pid, s.done)
	s.cmd = nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("cyrus: %w", err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}
