package upstream_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// dovecot is an unprivileged Dovecot instance on 127.0.0.1 that a test
// starts, kills and restarts. Its mail lives in the test's temp directory.
type dovecot struct {
	tb       testing.TB
	dir      string
	conf     string
	log      string
	IMAPAddr string // STARTTLS
	TLSAddr  string // implicit TLS
	RootCAs  *x509.CertPool
	cmd      *exec.Cmd
	done     chan struct{}
}

// startDovecot starts Dovecot with users, each with the password pass<name>.
// A missing dovecot binary fails the test: the sync engine's tests need it.
func startDovecot(tb testing.TB, users ...string) *dovecot {
	tb.Helper()
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		tb.Fatalf("dovecot not found (install Debian package dovecot-imapd): %v", err)
	}
	_ = bin
	dir := tb.TempDir()
	// Dovecot drops privileges to its own users, which must reach the
	// directory; t.TempDir makes it 0700.
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	du, err := user.Lookup("dovecot")
	if err != nil {
		tb.Fatalf("dovecot: system user missing (install dovecot-core): %v", err)
	}
	for _, sub := range []string{"run", "mail"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	os.Chown(filepath.Join(dir, "mail"), atoi(du.Uid), atoi(du.Gid))
	certPEM, keyPEM, pool := selfSigned(tb)
	os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600)
	var pw strings.Builder
	for _, u := range users {
		fmt.Fprintf(&pw, "%s:{PLAIN}pass%s\n", u, u)
	}
	os.WriteFile(filepath.Join(dir, "passwd"), []byte(pw.String()), 0o644)
	d := &dovecot{tb: tb, dir: dir, conf: filepath.Join(dir, "dovecot.conf"), log: filepath.Join(dir, "dovecot.log"), RootCAs: pool}
	d.IMAPAddr = "127.0.0.1:" + freePort(tb)
	d.TLSAddr = "127.0.0.1:" + freePort(tb)
	_, imapPort, _ := net.SplitHostPort(d.IMAPAddr)
	_, tlsPort, _ := net.SplitHostPort(d.TLSAddr)
	conf := `protocols = imap
listen = 127.0.0.1
base_dir = ` + dir + `/run
state_dir = ` + dir + `/run/state
instance_name = um-test-` + imapPort + `
log_path = ` + d.log + `
info_log_path = ` + d.log + `
ssl = required
ssl_cert = <` + dir + `/cert.pem
ssl_key = <` + dir + `/key.pem
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain login oauthbearer xoauth2
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:` + dir + `/mail/%u
mail_uid = ` + du.Uid + `
mail_gid = ` + du.Gid + `
mail_max_userip_connections = 2000
passdb {
  driver = passwd-file
  args = scheme=PLAIN ` + dir + `/passwd
}
userdb {
  driver = static
  args = home=` + dir + `/mail/%u
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox Trash {
    special_use = \Trash
    auto = create
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
  process_min_avail = 1
}
service imap {
  process_limit = 2048
}
default_client_limit = 4000
default_process_limit = 2048
`
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		tb.Fatal(err)
	}
	d.Start()
	tb.Cleanup(d.Stop)
	return d
}

// Start runs the master process in the foreground and waits until the
// IMAP port answers.
func (d *dovecot) Start() {
	d.tb.Helper()
	cmd := exec.Command("dovecot", "-F", "-c", d.conf)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := os.OpenFile(filepath.Join(d.dir, "stderr.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.tb.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		d.tb.Fatalf("dovecot: %v", err)
	}
	d.cmd = cmd
	d.done = make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(d.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", d.IMAPAddr, time.Second)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			c.Close()
			if strings.HasPrefix(string(buf[:n]), "* OK") {
				return
			}
		}
		select {
		case <-d.done:
			d.tb.Fatalf("dovecot exited at start:\n%s\n%s", d.readFile("stderr.log"), d.readFile("dovecot.log"))
		default:
		}
		if time.Now().After(deadline) {
			d.tb.Fatalf("dovecot did not answer on %s:\n%s\n%s", d.IMAPAddr, d.readFile("stderr.log"), d.readFile("dovecot.log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill sends SIGKILL to the master and every process it started, as a
// crash or power loss of the server would.
func (d *dovecot) Kill() {
	if d.cmd == nil {
		return
	}
	syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	<-d.done
	// Children that left the process group (none expected) die with the
	// master's pipe; give the kernel a moment to free the ports.
	d.cmd = nil
}

// Stop shuts Dovecot down.
func (d *dovecot) Stop() {
	if d.cmd == nil {
		return
	}
	syscall.Kill(-d.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.done
	}
	d.cmd = nil
}

func (d *dovecot) readFile(name string) string {
	b, _ := os.ReadFile(filepath.Join(d.dir, name))
	return string(b)
}

// TLSConfig returns a client configuration that trusts the instance's
// self-signed certificate.
func (d *dovecot) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: d.RootCAs, ServerName: "localhost"}
}

func freePort(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func atoi(s string) int {
	n := 0
	fmt.Sscan(s, &n)
	return n
}

// selfSigned makes a certificate for localhost and 127.0.0.1 and a pool
// that trusts it.
func selfSigned(tb testing.TB) (certPEM, keyPEM []byte, pool *x509.CertPool) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), pool
}
