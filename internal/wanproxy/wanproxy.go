// Package wanproxy is a TCP proxy on 127.0.0.1 for tests and benchmarks
// that makes a server on loopback look far away: it delays every byte by a
// fixed latency in each direction, and cuts connections when asked or at
// random, as a flaky wide-area network would.
package wanproxy

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a Proxy. The zero value forwards without delay.
type Options struct {
	// Latency delays data in each direction: a round trip through the proxy
	// costs twice this on top of the server's own.
	Latency time.Duration
	// CutMean, when positive, cuts each connection after a random time
	// (exponentially distributed with this mean) of its life.
	CutMean time.Duration
	// Seed seeds the random cuts; zero draws one.
	Seed uint64
}

// Proxy forwards connections from Addr to a backend address.
type Proxy struct {
	// Addr is the proxy's listening address, "127.0.0.1:port".
	Addr string

	backend string
	opts    Options
	ln      net.Listener

	cuts  atomic.Int64
	conns atomic.Int64

	mu     sync.Mutex
	rng    *rand.Rand
	open   map[net.Conn]bool
	closed bool
}

// Start listens on a free port of 127.0.0.1 and forwards to backend.
func Start(backend string, opts Options) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	seed := opts.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	p := &Proxy{Addr: ln.Addr().String(), backend: backend, opts: opts, ln: ln,
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), open: make(map[net.Conn]bool)}
	go p.accept()
	return p, nil
}

// Cuts returns how many connections the proxy cut so far (Cut and random
// cuts).
func (p *Proxy) Cuts() int64 { return p.cuts.Load() }

// Conns returns how many connections the proxy accepted so far.
func (p *Proxy) Conns() int64 { return p.conns.Load() }

// Cut closes every connection in progress, both ends, without a goodbye.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.open {
		c.Close()
		p.cuts.Add(1)
	}
}

// Close stops listening and cuts every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	return err
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.open[c] = true
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
}

func (p *Proxy) serve(c net.Conn) {
	b, err := net.DialTimeout("tcp", p.backend, 10*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c) || !p.track(b) {
		c.Close()
		b.Close()
		return
	}
	defer p.untrack(c)
	defer p.untrack(b)
	done := make(chan struct{})
	var once sync.Once
	stop := func() { once.Do(func() { close(done); c.Close(); b.Close() }) }
	if p.opts.CutMean > 0 {
		p.mu.Lock()
		d := time.Duration(p.rng.ExpFloat64() * float64(p.opts.CutMean))
		p.mu.Unlock()
		t := time.AfterFunc(d, func() { p.cuts.Add(1); stop() })
		defer t.Stop()
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(b, c, done); stop() }()
	go func() { defer wg.Done(); p.pipe(c, b, done); stop() }()
	wg.Wait()
}

type chunk struct {
	due  time.Time
	data []byte
}

// pipe copies src to dst, each chunk delivered Latency after it was read.
func (p *Proxy) pipe(dst, src net.Conn, done <-chan struct{}) {
	if p.opts.Latency <= 0 {
		io.Copy(dst, src)
		return
	}
	q := make(chan chunk, 4096)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case q <- chunk{time.Now().Add(p.opts.Latency), buf[:n]}:
				case <-done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for ch := range q {
		if d := time.Until(ch.due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				return
			}
		}
		if _, err := dst.Write(ch.data); err != nil {
			return
		}
	}
	// The source ended: pass the end on once its data is delivered.
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}
