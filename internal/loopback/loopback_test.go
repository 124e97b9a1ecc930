package loopback_test

import (
	"io"
	"net"
	"sync"
	"testing"

	"github.com/embeddedum/um/internal/loopback"
)

// greeter answers every connection with a line that names the listener
// kind, until Close.
type greeter struct {
	mu  sync.Mutex
	lns []net.Listener
}

func (g *greeter) serve(ln net.Listener, greeting string) error {
	g.mu.Lock()
	g.lns = append(g.lns, ln)
	g.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		io.WriteString(c, greeting)
		c.Close()
	}
}

func (g *greeter) Serve(ln net.Listener) error    { return g.serve(ln, "plain") }
func (g *greeter) ServeTLS(ln net.Listener) error { return g.serve(ln, "tls") }

func (g *greeter) Close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, ln := range g.lns {
		ln.Close()
	}
}

func TestServe(t *testing.T) {
	g := &greeter{}
	l, err := loopback.Serve(g)
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{l.PlainAddr: "plain", l.TLSAddr: "tls"} {
		if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
			t.Errorf("listener %s is not on 127.0.0.1", addr)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != want {
			t.Errorf("%s answered %q, %v; want %q", addr, got, err, want)
		}
	}
	g.Close()
	l.Wait()
	for _, addr := range []string{l.PlainAddr, l.TLSAddr} {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			t.Errorf("%s still accepts after the server closed", addr)
		}
	}
}
