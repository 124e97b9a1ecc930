package muteproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echo is a TCP echo server on 127.0.0.1.
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
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func start(t *testing.T) *Proxy {
	t.Helper()
	p, err := Start(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and reads what comes back within d: the line, or
// the read's error.
func roundTrip(c net.Conn, r *bufio.Reader, d time.Duration) (string, error) {
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(d))
	return r.ReadString('\n')
}

// TestSilence: a silenced connection stays open but passes nothing; one
// made afterwards passes.
func TestSilence(t *testing.T) {
	p := start(t)
	old, oldR := dial(t, p)
	if got, err := roundTrip(old, oldR, 5*time.Second); got != "ping\n" {
		t.Fatalf("before Silence: got %q, %v; want the echo", got, err)
	}
	p.Silence()
	if got, err := roundTrip(old, oldR, 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after Silence: got %q, %v; want nothing until the deadline (open, mute)", got, err)
	}
	c, r := dial(t, p)
	if got, err := roundTrip(c, r, 5*time.Second); got != "ping\n" {
		t.Fatalf("a connection made after Silence: got %q, %v; want the echo", got, err)
	}
}

// TestRefuseAndCloseConns: while refused, a new connection is closed at
// once; CloseConns closes those carried; Refuse(false) lets new ones in.
func TestRefuseAndCloseConns(t *testing.T) {
	p := start(t)
	old, oldR := dial(t, p)
	if got, err := roundTrip(old, oldR, 5*time.Second); got != "ping\n" {
		t.Fatalf("before Refuse: got %q, %v; want the echo", got, err)
	}
	p.Refuse(true)
	c, r := dial(t, p)
	if got, err := roundTrip(c, r, 5*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a refused connection: got %q, %v; want it closed", got, err)
	}
	p.CloseConns()
	if got, err := roundTrip(old, oldR, 5*time.Second); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after CloseConns: got %q, %v; want the connection closed", got, err)
	}
	p.Refuse(false)
	c, r = dial(t, p)
	if got, err := roundTrip(c, r, 5*time.Second); got != "ping\n" {
		t.Fatalf("after Refuse(false): got %q, %v; want the echo", got, err)
	}
}
