package imapserver

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
)

// FuzzParser feeds arbitrary bytes to each grammar of the command parser.
// It must never panic, never read past what the budgets allow, and after a
// refused command find the next line or give up with an error.
func FuzzParser(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzParser.
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		mode, in := data[0]%6, data[1:]
		c := &conn{}
		src := bytes.NewReader(in)
		c.dec = decoder{br: bufio.NewReader(src), cont: func() error { return nil }, maxLiteral: 1 << 10}
		c.dec.start()
		var err error
		switch mode {
		case 0:
			p := &searchParser{c: c}
			crit := &imap.SearchCriteria{}
			for err == nil {
				if err = p.key(crit, 0); err == nil && !c.dec.accept(' ') {
					break
				}
			}
			if p.keys > maxSearchKeys+1 {
				t.Fatalf("%d search keys read, budget %d", p.keys, maxSearchKeys)
			}
		case 1:
			o := &imap.FetchOptions{}
			w := &respWriter{c: c, names: map[*imap.FetchItemBodySection]string{}}
			if c.dec.accept('(') {
				c.dec.unread()
				err = c.dec.list(func() error { return c.fetchAtt(o, w) })
			} else {
				err = c.fetchAtt(o, w)
			}
		case 2:
			_, err = c.dec.flagList()
		case 3:
			for err == nil {
				_, err = c.dec.astring()
				if err == nil {
					err = c.dec.sp()
				}
			}
		case 4:
			_, err = c.dec.numSet(data[0]&0x80 != 0)
		case 5:
			var h *literalHeader
			if _, err = c.dec.atom(); err == nil {
				h, err = c.dec.literalHeader(true)
			}
			if err == nil {
				err = refuseLiteral(h, imap.ResponseCodeTooBig, "too big")
			}
		}
		var pe *protoError
		if errors.As(err, &pe) && !pe.fatal {
			err = c.dec.skipLine()
		}
		if err != nil && !errors.Is(err, io.EOF) && !errors.As(err, &pe) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("unexpected error type %T: %v", err, err)
		}
		if c.dec.n > maxCommandBytes+1 {
			t.Fatalf("read %d command bytes, budget %d", c.dec.n, maxCommandBytes)
		}
	})
}

// FuzzSession sends arbitrary bytes as a logged-in client with INBOX
// selected. Whatever it sends, the server must not fail (no SERVERBUG, no
// panic) and must go on serving other clients.
func FuzzSession(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzSession.
	e := newEnv(f, nil)
	for i := 0; i < 3; i++ {
		e.deposit("1001", "+1", 100)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", e.plain)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		// The same bytes go to a plain connection, which cannot log in
		// without TLS (the grammar before login), and to a TLS one logged
		// in with INBOX selected.
		tc, err := tls.Dial("tcp", e.tlsAddr, e.clientTLS)
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		var out bytes.Buffer
		done := make(chan struct{})
		go func() { io.Copy(&out, tc); close(done) }()
		io.WriteString(tc, "l LOGIN alice alice-pw\r\ns SELECT INBOX\r\n")
		tc.Write(data)
		io.WriteString(tc, "\r\nz LOGOUT\r\n")
		c.Write(data) // the same bytes before login
		c.Close()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			tc.Close()
			<-done
		}
		if bytes.Contains(out.Bytes(), []byte("SERVERBUG")) {
			t.Fatalf("server bug on input %q:\n%s", data, out.Bytes())
		}
		r := dialRaw(t, e.tlsAddr, e.clientTLS)
		if got := r.cmd("n", "NOOP"); !strings.HasPrefix(got, "n OK") {
			t.Fatalf("server unwell after input %q: NOOP = %q", data, got)
		}
		r.c.Close()
	})
}
