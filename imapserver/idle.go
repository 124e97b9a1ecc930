package imapserver

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// An idle connection (in IDLE, or between commands) is most of what a
// server with many clients holds, so while one waits for its client it
// keeps no buffers and no goroutine besides its own: its bufio.Reader and
// bufio.Writer go back to pools (they are taken again when input arrives),
// and IDLE waits in the connection's own read, which a change to the
// selected folder interrupts (netConn.wake) instead of a second goroutine
// reading for it.

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}
)

// input is what a connection's bufio.Reader reads: the bytes awaitInput
// read ahead, then the connection.
type input struct {
	r   io.Reader
	pre []byte
}

func (in *input) Read(p []byte) (int, error) {
	if len(in.pre) > 0 {
		n := copy(p, in.pre)
		in.pre = in.pre[n:]
		return n, nil
	}
	return in.r.Read(p)
}

// takeBuffers gives the connection a reader and a writer from the pools.
func (c *conn) takeBuffers() {
	if c.br != nil {
		return
	}
	c.in.r = c.c
	c.br = readerPool.Get().(*bufio.Reader)
	c.br.Reset(&c.in)
	c.bw = writerPool.Get().(*bufio.Writer)
	c.bw.Reset(c.out())
	c.dec.br, c.enc.w = c.br, c.bw
}

// releaseBuffers puts the reader and writer back in the pools; the writer
// must have been flushed and the reader must hold nothing.
func (c *conn) releaseBuffers() {
	if c.br == nil {
		return
	}
	c.br.Reset(nil)
	readerPool.Put(c.br)
	c.bw.Reset(nil)
	writerPool.Put(c.bw)
	c.br, c.bw, c.dec.br, c.enc.w = nil, nil, nil, nil
}

// awaitInput returns once the client has sent something (or the read
// failed), holding no buffers while it waits unless input is buffered
// already. The output must have been flushed. The buffers are back when
// it returns, whatever the outcome.
func (c *conn) awaitInput() error {
	if c.br.Buffered() > 0 || len(c.in.pre) > 0 || c.bw.Buffered() > 0 {
		return nil
	}
	c.releaseBuffers()
	n, err := c.c.Read(c.ahead[:])
	c.takeBuffers()
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	c.in.pre = c.ahead[:n]
	c.br.Peek(n) // into the reader, so that Buffered counts it
	return nil
}

// wake interrupts the read of a connection in IDLE, so that its goroutine
// sends what changed. It is the Notify of the session's subscription: it
// runs on the goroutine that committed the change and does not block. The
// lock keeps a wake from landing outside IDLE, or between rearm's restored
// deadline and the check of woken that follows it.
func (c *netConn) wake() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.idling {
		c.woken = true
		c.Conn.SetReadDeadline(aLongTimeAgo)
	}
}

var aLongTimeAgo = time.Unix(1, 0)

// setIdling starts or ends an IDLE's wait.
func (c *netConn) setIdling(on bool) {
	c.mu.Lock()
	c.idling, c.woken = on, false
	c.mu.Unlock()
}

// rearm restores the read deadline a wake moved and clears woken, or
// reports errShutdown when Shutdown has asked the connection to end
// meanwhile (Shutdown's own deadline must win over the restored one).
func (c *netConn) rearm() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shutdown && c.busy.Load() == 0 {
		return errShutdown
	}
	c.woken = false
	return c.Conn.SetReadDeadline(c.readDeadline)
}

// wasWoken reports whether a wake came since the last rearm.
func (c *netConn) wasWoken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.woken
}

func (c *conn) cmdIdle(tag string) error {
	if err := c.end(); err != nil {
		return err
	}
	c.enc.raw("+ idling\r\n")
	c.nc.busy.Add(-1) // Shutdown may end an IDLE at once
	defer c.nc.busy.Add(1)
	c.nc.setIdling(true)
	defer c.nc.setIdling(false)
	for {
		// A change queued before the rearm is sent by this poll: the
		// publisher queues it before it calls wake.
		if err := c.nc.rearm(); err != nil {
			return err
		}
		if err := c.poll(true); err != nil {
			return err
		}
		if err := c.bw.Flush(); err != nil {
			return err
		}
		line, err := c.idleLine()
		var ne net.Error
		switch {
		case err != nil && errors.As(err, &ne) && ne.Timeout() && c.nc.wasWoken():
			continue
		case err != nil:
			return err
		}
		c.parsed = true
		if !strings.EqualFold(line, "DONE") {
			return badSyntax("Expected DONE")
		}
		return c.ok(tag, "", "IDLE completed")
	}
}

// idleLine reads the line that ends IDLE. A wake ends it with a timeout
// error and leaves what was read of the line in the reader.
func (c *conn) idleLine() (string, error) {
	for {
		if i := bytes.IndexByte(peekBuffered(c.br), '\n'); i >= 0 {
			line, _ := c.br.ReadSlice('\n')
			return strings.TrimRight(string(line), "\r\n"), nil
		}
		n := c.br.Buffered()
		switch {
		case n >= bufSize:
			return "", errLineTooLong
		case n == 0:
			if err := c.awaitInput(); err != nil {
				return "", err
			}
		default:
			if _, err := c.br.Peek(n + 1); err != nil {
				return "", err
			}
		}
	}
}

// peekBuffered returns the bytes br holds, without reading.
func peekBuffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}
