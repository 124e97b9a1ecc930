package interop

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/imapserver"
	"github.com/embeddedum/um/internal/loopback"
	"github.com/embeddedum/um/internal/selfsigned"
	"github.com/embeddedum/um/storage/boltstore"
	"github.com/embeddedum/um/wav"
)

const (
	testUser = "1001"
	testPass = "s3cret-Pass"
)

// env is um with its IMAP server on two loopback listeners, one voice
// mailbox with voicemail in INBOX, and a recorder of the MWI hook.
type env struct {
	svc       *um.Service
	mb        *um.Mailbox
	msgs      []um.Message // deposited, in UID order
	audio     map[um.UID][]byte
	PlainAddr string // STARTTLS
	TLSAddr   string // implicit TLS
	CertFile  string // the server's self-signed certificate, to trust as a CA
	dir       string

	mu   sync.Mutex
	mwis []um.MWIState
}

// startEnv deposits n voicemails (the second one urgent) and serves them.
func startEnv(tb testing.TB, n int) *env {
	tb.Helper()
	e := &env{dir: tb.TempDir(), audio: make(map[um.UID][]byte)}
	store, err := boltstore.Open(filepath.Join(e.dir, "store"), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	svc, err := um.New(store, &um.Options{MWI: func(s um.MWIState) {
		e.mu.Lock()
		e.mwis = append(e.mwis, s)
		e.mu.Unlock()
	}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { svc.Close() })
	e.svc = svc
	ctx := context.Background()
	if e.mb, err = svc.CreateMailbox(ctx, testUser); err != nil {
		tb.Fatal(err)
	}
	callers := []struct{ num, name string }{
		{"+4930123456", "Alice Example"},
		{"+4940987654", "Bob Müller"},
		{"", ""},
	}
	for i := range n {
		c := callers[i%len(callers)]
		audio := wav.Tone(time.Duration(1+i) * time.Second)
		m, err := e.mb.Deposit(ctx, um.Deposit{
			Audio:        bytes.NewReader(audio),
			CallerNumber: c.num,
			CallerName:   c.name,
			Time:         time.Date(2025, 3, 14, 9, 26, 53+i, 0, time.UTC),
			Duration:     time.Duration(1+i) * time.Second,
			Urgent:       i == 1,
		})
		if err != nil {
			tb.Fatal(err)
		}
		e.msgs = append(e.msgs, m)
		e.audio[m.UID] = audio
	}

	cert, err := selfsigned.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	e.CertFile = filepath.Join(e.dir, "cert.pem")
	if err := os.WriteFile(e.CertFile, cert.CertPEM, 0o644); err != nil {
		tb.Fatal(err)
	}
	srv, err := imapserver.New(svc, &imapserver.Options{
		Authenticate: func(ctx context.Context, user, pass string) (string, error) {
			if user == testUser && pass == testPass {
				return testUser, nil
			}
			return "", errors.New("interop: wrong password")
		},
		TLSConfig: cert.ServerConfig(),
		Logf:      tb.Logf,
	})
	if err != nil {
		tb.Fatal(err)
	}
	l, err := loopback.Serve(srv)
	if err != nil {
		tb.Fatal(err)
	}
	e.PlainAddr, e.TLSAddr = l.PlainAddr, l.TLSAddr
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		l.Wait()
	})
	return e
}

// rendered returns the bytes um's server gives for BODY[] of m.
func (e *env) rendered(tb testing.TB, m um.Message) []byte {
	tb.Helper()
	var b bytes.Buffer
	if _, err := um.RenderEmail(m, um.RenderOptions{Mailbox: testUser}).WriteTo(&b, bytes.NewReader(e.audio[m.UID])); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// message returns m as the store has it now.
func (e *env) message(tb testing.TB, m um.Message) (um.Message, error) {
	tb.Helper()
	return e.mb.Message(context.Background(), m.ID)
}

// waitMWI waits until the MWI hook has been given a state for which ok is
// true, and fails the test with the states seen when it is not given one.
func (e *env) waitMWI(tb testing.TB, ok func(um.MWIState) bool) um.MWIState {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.svc.FlushMWI()
		e.mu.Lock()
		seen := append([]um.MWIState(nil), e.mwis...)
		e.mu.Unlock()
		if len(seen) > 0 && ok(seen[len(seen)-1]) {
			return seen[len(seen)-1]
		}
		if time.Now().After(deadline) {
			tb.Fatalf("MWI hook calls %v: none matches", seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// program returns the path of a client program, failing the test with the
// Debian package to install when it is missing.
func program(tb testing.TB, name, pkg string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("%s not found: install Debian package %s (%v)", name, pkg, err)
	}
	return p
}

// run runs a client program with a timeout and returns its standard output.
func run(tb testing.TB, dir string, name string, args ...string) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %q: %v\nstdout:\n%s\nstderr:\n%s", name, args, err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}
