package wanproxy_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/embeddedum/um/internal/wanproxy"
)

// echo starts a line echo server on loopback.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// TestLatencyAndCut: a round trip through the proxy takes at least twice
// the latency, data arrives intact and in order, and Cut ends the
// connection.
func TestLatencyAndCut(t *testing.T) {
	p, err := wanproxy.Start(echo(t), wanproxy.Options{Latency: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for _, line := range []string{"one\n", "two\n"} {
		start := time.Now()
		io.WriteString(c, line)
		got, err := br.ReadString('\n')
		if err != nil || got != line {
			t.Fatalf("echo = %q, %v; want %q", got, err, line)
		}
		if rtt := time.Since(start); rtt < 100*time.Millisecond {
			t.Fatalf("round trip = %v, want at least 2 × 50 ms", rtt)
		}
	}
	p.Cut()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := br.ReadString('\n'); err == nil {
		t.Fatalf("read after Cut() succeeded, want the connection gone")
	}
	if p.Cuts() < 1 || p.Conns() != 1 {
		t.Fatalf("Cuts() = %d, Conns() = %d; want ≥ 1 and 1", p.Cuts(), p.Conns())
	}
}

// TestRandomCuts: with CutMean, connections end by themselves.
func TestRandomCuts(t *testing.T) {
	p, err := wanproxy.Start(echo(t), wanproxy.Options{CutMean: 20 * time.Millisecond, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read succeeded, want the connection cut")
	}
}
