package upstream

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

// TestGuardScan feeds server output to the framing guard in chunks of
// every size: within the limits it passes, a longer line or a larger
// literal is a server fault, and BYE is noted.
func TestGuardScan(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		fault bool
		bye   bool
	}{
		{"lines", "* OK hi\r\n* 1 EXISTS\r\nA1 OK done\r\n", false, false},
		{"literal within the limit", "* 1 FETCH (BODY[] {10}\r\n0123456789)\r\n", false, false},
		{"literal with LITERAL+ syntax", "* 1 FETCH (BODY[] {3+}\r\nabc)\r\n", false, false},
		{"literal holding CRLF and braces", "* 1 FETCH (BODY[] {8}\r\n{99999}\r\n)\r\n", false, false},
		{"literal over the limit", "* 1 FETCH (BODY[] {65}\r\n", true, false},
		{"literals adding up over the limit", "* 1 FETCH (A {40}\r\n" + strings.Repeat("x", 40) + " B {40}\r\n", true, false},
		{"line over the limit", "* OK " + strings.Repeat("x", 200) + "\r\n", true, false},
		{"absurd literal size", "* 1 FETCH (BODY[] {99999999999999999999999999}\r\n", true, false},
		{"BYE", "* BYE shutting down\r\n", false, true},
		{"bye in a literal is data", "* 1 FETCH (BODY[] {9}\r\n* BYE no\n)\r\n", false, false},
		// go-imap's client loops for ever on a "(" in a capability list.
		{"parenthesis in a CAPABILITY code", "* OK [CAPABILITY IMAP4rev1 (] hi\r\n", true, false},
		{"parenthesis in a tagged CAPABILITY code", "A1 OK [CAPABILITY  (X)] done\r\n", true, false},
		{"parenthesis right after CAPABILITY", "* OK [CAPABILITY(] hi\r\n", true, false},
		{"parenthesis in CAPABILITY data", "* capability IMAP4rev1 IDLE (\r\n", true, false},
		{"parenthesis in ENABLED data", "* ENABLED (\r\n", true, false},
		{"capability list", "* CAPABILITY IMAP4rev1 IDLE AUTH=PLAIN\r\n* OK [CAPABILITY IMAP4rev1] hi\r\n", false, false},
		{"parenthesis after the list", "* OK [CAPABILITY IMAP4rev1] (hi)\r\n", false, false},
		{"parenthesis after a quoted string", "* OK [CAPABILITY IMAP4rev1 \"x\" (] hi\r\n", false, false},
		{"another code", "* OK [CAPABILITYX (] hi\r\n", false, false},
		{"keyword in a quoted string", "* LIST () \"/\" \"[CAPABILITY (x\"\r\n", false, false},
		{"keyword in a literal", "* 1 FETCH (BODY[] {14}\r\n[CAPABILITY (x)\r\n", false, false},
		{"keyword after a literal", "* 1 FETCH (BODY[] {1}\r\nx CAPABILITY (X))\r\n", false, false},
		{"keyword not leading", "* 1 FETCH (X * ENABLED (Y))\r\n", false, false},
	}
	for _, tc := range tests {
		for _, chunk := range []int{1, 3, 7, 1000} {
			g := newGuard(nil, 100, 64)
			var err error
			for in := []byte(tc.in); len(in) > 0 && err == nil; {
				n := min(chunk, len(in))
				err = g.scan(in[:n])
				in = in[n:]
			}
			if got := err != nil; got != tc.fault {
				t.Errorf("%s, chunks of %d: scan() = %v, want fault %v", tc.name, chunk, err, tc.fault)
			}
			if err != nil && !errors.Is(err, ErrServerFault) {
				t.Errorf("%s: scan() = %v, want ErrServerFault", tc.name, err)
			}
			if g.bye != tc.bye {
				t.Errorf("%s, chunks of %d: bye = %v, want %v", tc.name, chunk, g.bye, tc.bye)
			}
		}
	}
}

// TestGuardReadError: bytes that come with a read error reach go-imap
// first and the error after them, on a Read of its own, so a response
// that go-imap fails to parse is told apart from a connection that failed
// (readFailed stays false until the error is returned).
func TestGuardReadError(t *testing.T) {
	g := newGuard(&lastConn{data: []byte("* OK hi\r\n")}, 100, 64)
	buf := make([]byte, 64)
	if n, err := g.Read(buf); n != 9 || err != nil || g.readFailed() {
		t.Errorf("first Read = %d, %v (read failed %v); want 9, nil (false)", n, err, g.readFailed())
	}
	if n, err := g.Read(buf); n != 0 || err != io.EOF || !g.readFailed() {
		t.Errorf("second Read = %d, %v (read failed %v); want 0, EOF (true)", n, err, g.readFailed())
	}
}

// lastConn returns its data together with io.EOF, as a TLS connection
// does when the peer's close_notify follows its last record.
type lastConn struct {
	net.Conn
	data []byte
}

func (c *lastConn) Read(p []byte) (int, error) {
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, io.EOF
}
