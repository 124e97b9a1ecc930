package muteproxy

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// setup starts a proxy to a backend listener the test accepts on itself.
func setup(t *testing.T) (*Proxy, net.Listener) {
	t.Helper()
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { backend.Close() })
	p, err := Start(backend.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, backend
}

// connect dials the proxy and returns the client's end and the backend's.
func connect(t *testing.T, p *Proxy, backend net.Listener) (client, server net.Conn) {
	t.Helper()
	client, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	backend.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	server, err = backend.Accept()
	if err != nil {
		t.Fatalf("the proxy did not connect to the backend: %v", err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// pass writes b on from and reads on to within d what arrives.
func pass(from, to net.Conn, b string, d time.Duration) (string, error) {
	if _, err := from.Write([]byte(b)); err != nil {
		return "", err
	}
	to.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, len(b))
	n, err := io.ReadFull(to, buf)
	return string(buf[:n]), err
}

// TestSilence: a silenced connection stays open but passes nothing either
// way; one made afterwards passes.
func TestSilence(t *testing.T) {
	p, backend := setup(t)
	c, s := connect(t, p, backend)
	if got, err := pass(c, s, "up", 5*time.Second); got != "up" {
		t.Fatalf("before Silence: the backend got %q, %v", got, err)
	}
	p.Silence()
	if got, err := pass(c, s, "up", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after Silence: the backend got %q, %v; want nothing until the deadline (open, mute)", got, err)
	}
	if got, err := pass(s, c, "down", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after Silence: the client got %q, %v; want nothing until the deadline (open, mute)", got, err)
	}
	c, s = connect(t, p, backend)
	if got, err := pass(s, c, "down", 5*time.Second); got != "down" {
		t.Fatalf("a connection made after Silence: the client got %q, %v", got, err)
	}
}

// TestRefuseAndCloseConns: while refused, a new connection is closed at
// once; CloseConns closes those carried; Refuse(false) lets new ones in.
func TestRefuseAndCloseConns(t *testing.T) {
	p, backend := setup(t)
	old, _ := connect(t, p, backend)
	p.Refuse(true)
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a refused connection: read %d bytes, %v; want it closed", n, err)
	}
	p.CloseConns()
	old.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := old.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after CloseConns: read %d bytes, %v; want the connection closed", n, err)
	}
	p.Refuse(false)
	c, s := connect(t, p, backend)
	if got, err := pass(c, s, "up", 5*time.Second); got != "up" {
		t.Fatalf("after Refuse(false): the backend got %q, %v", got, err)
	}
}
