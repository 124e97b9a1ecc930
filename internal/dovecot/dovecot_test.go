package dovecot_test

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/embeddedum/um/internal/dovecot"
	"github.com/emersion/go-imap/v2/imapclient"
)

func start(t testing.TB, opts dovecot.Options) *dovecot.Server {
	t.Helper()
	s, err := dovecot.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

func TestStartLoginAppendStop(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts dovecot.Options
	}{
		{"default", dovecot.Options{}},
		{"high performance, plaintext", dovecot.Options{HighPerformance: true, AllowPlaintext: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Dir = t.TempDir()
			tc.opts.Users = map[string]string{"alice": "secret-a", "bob": "secret-b"}
			s := start(t, tc.opts)

			c, err := imapclient.DialTLS(s.TLSAddr, &imapclient.Options{TLSConfig: s.TLSConfig()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Login("alice", "secret-a").Wait(); err != nil {
				t.Fatalf("Login(alice) = %v\n%s", err, s.Logs())
			}
			msg := "From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n"
			w := c.Append("INBOX", int64(len(msg)), nil)
			w.Write([]byte(msg))
			w.Close()
			if _, err := w.Wait(); err != nil {
				t.Fatalf("Append = %v", err)
			}
			c.Logout().Wait()

			files, _ := filepath.Glob(filepath.Join(s.MailDir("alice"), "*", "*"))
			found := false
			for _, f := range files {
				if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), "Subject: hi") {
					found = true
				}
			}
			if !found {
				t.Errorf("no file in %s holds the appended message (files %v)", s.MailDir("alice"), files)
			}

			plain, err := imapclient.DialInsecure(s.Addr, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = plain.Login("bob", "secret-b").Wait()
			plain.Close()
			if tc.opts.AllowPlaintext && err != nil {
				t.Errorf("plaintext Login(bob) = %v, want nil with AllowPlaintext", err)
			}
			// Without AllowPlaintext Dovecot still takes a password from
			// 127.0.0.1, which it counts as secure, so that case has no check.

			// Last, since Dovecot delays the next logins from an address
			// that failed one.
			bad, err := imapclient.DialTLS(s.TLSAddr, &imapclient.Options{TLSConfig: s.TLSConfig()})
			if err != nil {
				t.Fatal(err)
			}
			err = bad.Login("alice", "wrong").Wait()
			bad.Close()
			if err == nil {
				t.Error("Login(alice, wrong) = nil error, want a failure")
			}

			pid := s.PID()
			rss, err := dovecot.TreeRSS(pid)
			if err != nil || rss < 1<<20 {
				t.Errorf("TreeRSS(%d) = %d, %v; want at least 1 MiB", pid, rss, err)
			}
			if anon, err := dovecot.TreeStatus(pid, "RssAnon"); err != nil || anon <= 0 {
				t.Errorf("TreeStatus(%d, RssAnon) = %d, %v; want above 0", pid, anon, err)
			}
			s.Stop()
			if s.PID() != 0 {
				t.Errorf("PID() after Stop = %d, want 0", s.PID())
			}
			if err := syscall.Kill(pid, 0); err == nil {
				t.Errorf("master process %d still runs after Stop", pid)
			}
			if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s still accepts after Stop", s.Addr)
			}
		})
	}
}

func TestStatusField(t *testing.T) {
	hwm, err := dovecot.StatusField(os.Getpid(), "VmHWM")
	if err != nil || hwm <= 0 {
		t.Errorf("StatusField(self, VmHWM) = %d, %v; want > 0", hwm, err)
	}
	if _, err := dovecot.StatusField(os.Getpid(), "NoSuchField"); err == nil {
		t.Error("StatusField(self, NoSuchField) = nil error")
	}
}

// A process's PSS is at most its RSS (a page it shares counts in part),
// and more than nothing.
func TestTreePSS(t *testing.T) {
	pss, err := dovecot.TreePSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	rss, err := dovecot.TreeRSS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if pss <= 0 || pss > rss+1<<20 {
		t.Errorf("TreePSS(self) = %d, TreeRSS(self) = %d; want 0 < PSS <= RSS", pss, rss)
	}
	if _, err := dovecot.TreePSS(1 << 30); err == nil {
		t.Error("TreePSS of a process that does not exist: nil error")
	}
}

func TestTreeCPU(t *testing.T) {
	before, err := dovecot.TreeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn some CPU until the kernel's 10 ms ticks show it.
	x := 0
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		for i := range 1 << 20 {
			x += i
		}
		if after, _ := dovecot.TreeCPU(os.Getpid()); after > before {
			return
		}
	}
	t.Errorf("TreeCPU(self) stayed %v after 5 s of work (%d)", before, x)
}

func TestKillRestart(t *testing.T) {
	s := start(t, dovecot.Options{
		Dir:            t.TempDir(),
		Users:          map[string]string{"alice": "secret-a"},
		AuthMechanisms: "plain login oauthbearer xoauth2",
	})
	login := func() *imapclient.Client {
		t.Helper()
		c, err := imapclient.DialTLS(s.TLSAddr, &imapclient.Options{TLSConfig: s.TLSConfig()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Login("alice", "secret-a").Wait(); err != nil {
			t.Fatalf("Login(alice) = %v\n%s", err, s.Logs())
		}
		return c
	}
	pre, err := imapclient.DialTLS(s.TLSAddr, &imapclient.Options{TLSConfig: s.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	caps, err := pre.Capability().Wait()
	pre.Close()
	if err != nil || !caps.Has("AUTH=OAUTHBEARER") || !caps.Has("AUTH=XOAUTH2") {
		t.Errorf("capabilities %v (%v) lack AUTH=OAUTHBEARER and AUTH=XOAUTH2", caps, err)
	}
	c := login()
	if err := c.Create("Kept", nil).Wait(); err != nil {
		t.Fatal(err)
	}

	pid, addr := s.PID(), s.Addr
	s.Kill()
	if s.PID() != 0 {
		t.Errorf("PID() after Kill = %d, want 0", s.PID())
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("master process %d still runs after Kill", pid)
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts after Kill", addr)
	}

	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	if s.Addr != addr {
		t.Errorf("Addr after Restart = %s, want %s", s.Addr, addr)
	}
	if _, err := login().Select("Kept", nil).Wait(); err != nil {
		t.Errorf("folder made before Kill: Select = %v", err)
	}
	if err := s.Restart(); err == nil {
		t.Error("Restart while running = nil error")
	}
}
