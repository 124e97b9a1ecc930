package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/embeddedum/um/bench/internal/benchserver"
	"github.com/embeddedum/um/bench/internal/childproc"
	"github.com/embeddedum/um/internal/loopback"
	"github.com/embeddedum/um/internal/selfsigned"
)

// childEnv, when set, makes the program serve the um store in the directory
// it names instead of running the load: um's server runs in a process of
// its own, so that its memory can be measured apart from the clients'.
const childEnv = "IMAPLOAD_UM_CHILD"

// childPlainEnv, when set in the child, allows LOGIN without TLS.
const childPlainEnv = "IMAPLOAD_UM_PLAIN"

// cpuProfileEnv names a file for a CPU profile of um's server, for
// finding where its time goes: IMAPLOAD_UM_CPUPROFILE=um.pprof.
const cpuProfileEnv = "IMAPLOAD_UM_CPUPROFILE"

// child is um's server running in a child process.
type child struct {
	proc               *childproc.Proc
	PlainAddr, TLSAddr string
	pool               *x509.CertPool
}

// startChild starts this program again as um's server over the store in
// dir, and returns once it listens.
func startChild(dir string, useTLS bool) (*child, error) {
	cert, err := selfsigned.New(nil)
	if err != nil {
		return nil, err
	}
	env := []string{childEnv + "=" + dir, "IMAPLOAD_CERT=" + string(cert.CertPEM), "IMAPLOAD_KEY=" + string(cert.KeyPEM)}
	if !useTLS {
		env = append(env, childPlainEnv+"=1")
	}
	proc, err := childproc.Start("um server", env...)
	if err != nil {
		return nil, err
	}
	c := &child{proc: proc, pool: cert.Pool()}
	line, err := bufio.NewReader(proc.Stdout).ReadString('\n')
	if err != nil {
		proc.Stop(15 * time.Second)
		return nil, fmt.Errorf("um server did not start: %w", err)
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		c.Stop()
		return nil, fmt.Errorf("um server said %q, want two addresses", line)
	}
	c.PlainAddr, c.TLSAddr = f[0], f[1]
	return c, nil
}

// PID returns the child's process ID.
func (c *child) PID() int { return c.proc.PID() }

// TLSConfig returns a client configuration that trusts the child's
// certificate.
func (c *child) TLSConfig() *tls.Config {
	return &tls.Config{RootCAs: c.pool, ServerName: "localhost"}
}

// Stop closes the child's standard input, which makes it shut down, and
// waits for it to exit.
func (c *child) Stop() error { return c.proc.Stop(15 * time.Second) }

// childMain serves the store named by childEnv until standard input is
// closed, and returns the exit code.
func childMain() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "imapload (um server):", err)
		return 1
	}
	if path := os.Getenv(cpuProfileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	svc, closeAll, err := benchserver.Open(os.Getenv(childEnv))
	if err != nil {
		return fail(err)
	}
	defer closeAll()
	srv, err := benchserver.NewIMAP(svc, []byte(os.Getenv("IMAPLOAD_CERT")), []byte(os.Getenv("IMAPLOAD_KEY")), os.Getenv(childPlainEnv) != "")
	if err != nil {
		return fail(err)
	}
	l, err := loopback.Serve(srv)
	if err != nil {
		return fail(err)
	}
	fmt.Printf("%s %s\n", l.PlainAddr, l.TLSAddr)
	io.Copy(io.Discard, os.Stdin)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(ctx)
	l.Wait()
	if err != nil {
		return fail(err)
	}
	return 0
}
