// Package loopback serves an IMAP server on the two listeners IMAP wants,
// both on 127.0.0.1 and free ports: one for plain text with STARTTLS, one
// for implicit TLS. Tests and benchmark tools use it.
package loopback

import (
	"fmt"
	"net"
	"sync"
)

// Server serves connections from a listener in plain text (Serve) or with
// implicit TLS (ServeTLS), until it is closed; um's imapserver.Server is
// one.
type Server interface {
	Serve(net.Listener) error
	ServeTLS(net.Listener) error
}

// Listeners is a Server being served on two loopback listeners.
type Listeners struct {
	// PlainAddr is the plain-text listener (STARTTLS), "127.0.0.1:port".
	PlainAddr string
	// TLSAddr is the implicit-TLS listener.
	TLSAddr string

	wg sync.WaitGroup
}

// Serve opens the two listeners and serves srv on them in goroutines of
// their own. To stop, close or shut down srv its own way, then call Wait.
func Serve(srv Server) (*Listeners, error) {
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("loopback: %w", err)
	}
	implicit, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		plain.Close()
		return nil, fmt.Errorf("loopback: %w", err)
	}
	l := &Listeners{PlainAddr: plain.Addr().String(), TLSAddr: implicit.Addr().String()}
	l.wg.Add(2)
	go func() { defer l.wg.Done(); srv.Serve(plain) }()
	go func() { defer l.wg.Done(); srv.ServeTLS(implicit) }()
	return l, nil
}

// Wait returns once both of srv's Serve and ServeTLS have returned.
func (l *Listeners) Wait() { l.wg.Wait() }
