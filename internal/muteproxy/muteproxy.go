// Package muteproxy is a TCP proxy on 127.0.0.1 for tests that loses a
// peer the quiet way: it can silence the connections it carries without
// closing them, as a dead link or a dropped NAT entry does, refuse new
// ones, and close them all, as a crashed peer's kernel would. (wanproxy
// delays and cuts; a mute connection needs a copy loop of its own.)
package muteproxy

import (
	"net"
	"sync"
)

// Proxy forwards connections from Addr to a target address.
type Proxy struct {
	// Addr is the proxy's listening address, "127.0.0.1:port".
	Addr string

	ln     net.Listener
	target string

	mu      sync.Mutex
	refused bool
	mute    chan struct{} // closed to silence the connections it carries now
	conns   []net.Conn
}

// Start listens on a free port of 127.0.0.1 and forwards to target.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{Addr: ln.Addr().String(), ln: ln, target: target, mute: make(chan struct{})}
	go p.serve()
	return p, nil
}

func (p *Proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refused := p.refused
		p.mu.Unlock()
		if refused {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.refused {
			// Refused while dialing: this one must not slip past the cut.
			p.mu.Unlock()
			c.Close()
			s.Close()
			continue
		}
		p.conns = append(p.conns, c, s)
		mute := p.mute
		p.mu.Unlock()
		go pipe(c, s, mute)
		go pipe(s, c, mute)
	}
}

// pipe copies until an error; once mute is closed it stops passing bytes
// but keeps both ends open.
func pipe(dst, src net.Conn, mute <-chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-mute:
			return
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// Silence stops every connection open now from passing bytes, leaving
// them open; later ones pass (unless refused).
func (p *Proxy) Silence() {
	p.mu.Lock()
	close(p.mute)
	p.mute = make(chan struct{})
	p.mu.Unlock()
}

// Refuse closes the connections accepted from now on at once, while
// refuse; Refuse(false) lets them through again.
func (p *Proxy) Refuse(refuse bool) {
	p.mu.Lock()
	p.refused = refuse
	p.mu.Unlock()
}

// CloseConns closes every connection the proxy carries, both ends.
func (p *Proxy) CloseConns() {
	p.mu.Lock()
	cs := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range cs {
		c.Close()
	}
}

// Close stops listening and closes every connection.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.CloseConns()
	return err
}
