package sipmwi

import (
	"net"
	"sync"
)

// peerLimitListener refuses a TCP connection from an address that already
// holds max of them, so that one peer cannot open connections (each with
// its buffers and goroutine in sipgo) without bound.
type peerLimitListener struct {
	net.Listener
	max int

	mu    sync.Mutex
	conns map[string]int
}

func (l *peerLimitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer := c.RemoteAddr().String()
		if host, _, err := net.SplitHostPort(peer); err == nil {
			peer = host
		}
		l.mu.Lock()
		if l.conns[peer] >= l.max {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.conns[peer]++
		l.mu.Unlock()
		return &peerConn{Conn: c, release: func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.conns[peer]--; l.conns[peer] <= 0 {
				delete(l.conns, peer)
			}
		}}, nil
	}
}

type peerConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *peerConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
