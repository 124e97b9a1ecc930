package upstream

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// guard sits between the TLS connection and go-imap's client, which reads
// lines and literals of any length: it follows the framing of the server's
// responses and ends the connection, with an error wrapping ErrServerFault,
// at a line longer than maxLine bytes, a response whose literals add up
// to more than maxLiteral, or more than maxAnswer bytes (plus what the
// command may need, see armFor) read since the last command was armed:
// go-imap keeps every LIST and SEARCH response of a command, however many
// the server sends. It also notes a BYE, after which nothing the server
// says is acted on, and keeps a deadline of its own on reads (arm) besides
// the one go-imap sets.
type guard struct {
	net.Conn
	raw                 net.Conn // the socket under TLS (Conn itself without TLS)
	maxLine, maxLiteral int64
	maxAnswer           int64 // 0: no limit

	answered  atomic.Int64 // bytes read since the command was armed
	answerCap atomic.Int64 // what answered may reach; 0: no limit

	pre []byte // served before the connection's bytes (the greeting after our own STARTTLS)

	// Owned by the reading goroutine.
	lineLen, lit, respLit int64
	caps                  capScan
	head, tail            []byte
	edge                  bool   // what go-imap read so far ends with a whole response
	held                  []byte // read from the server, not yet given to go-imap
	heldErr               error  // what the read that filled held returned

	// Owned by the writing goroutine (go-imap writes one command at a
	// time): the framing of what the client sends, see literal.go.
	wlit  int64
	wtail []byte
	plus  atomic.Bool // make the next synchronizing literal non-synchronizing

	mu       sync.Mutex
	err      error
	bye      bool
	timedOut bool
	readErr  bool      // a Read returned an error to go-imap
	inject   bool      // a continuation request of our own is due to go-imap
	poked    bool      // the read deadline was moved to wake a blocked Read
	theirs   time.Time // go-imap's read deadline
	mine     time.Time // the command deadline
}

func newGuard(c net.Conn, maxLine, maxLiteral int64) *guard {
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	return &guard{Conn: c, raw: raw, maxLine: maxLine, maxLiteral: maxLiteral, head: make([]byte, 0, 8), tail: make([]byte, 0, 32),
		wtail: make([]byte, 0, 32), edge: true}
}

func (g *guard) Read(p []byte) (int, error) {
	for {
		if err := g.fault(); err != nil {
			return 0, err
		}
		if g.edge && g.takeInject() {
			g.pre = append(g.pre, continuation...)
		}
		if len(g.pre) > 0 {
			n := copy(p, g.pre)
			g.pre = g.pre[n:]
			return n, nil
		}
		var n int
		var err error
		switch {
		case len(g.held) > 0:
			n = copy(p, g.held)
			g.held = g.held[n:]
		case g.heldErr != nil:
			err, g.heldErr = g.heldErr, nil
		default:
			n, err = g.Conn.Read(p)
		}
		if n > 0 && err != nil {
			// The error goes to go-imap on its own, after it has read the
			// bytes: a response it then fails to parse was the server's
			// doing, not the network's (see readFailed).
			g.heldErr, err = err, nil
		}
		if n > 0 {
			k, ferr := g.scanUntil(p[:n], g.injectDue())
			if ferr != nil {
				g.mu.Lock()
				g.err = ferr
				g.mu.Unlock()
				g.Close()
				return 0, ferr
			}
			if k < n {
				// Our continuation request goes between two responses.
				g.held = append(append([]byte(nil), p[k:n]...), g.held...)
				n = k
			}
			if most := g.answerCap.Load(); most > 0 && g.answered.Add(int64(n)) > most {
				ferr := fmt.Errorf("%w: more than %d bytes in answer to one command", ErrServerFault, most)
				g.mu.Lock()
				g.err = ferr
				g.mu.Unlock()
				g.Close()
				return 0, ferr
			}
		}
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			if n == 0 && g.takePoke() {
				continue // woken to serve a continuation request, not a timeout
			}
			g.mu.Lock()
			g.timedOut = true
			g.mu.Unlock()
		}
		if err != nil {
			g.mu.Lock()
			g.readErr = true
			g.mu.Unlock()
		}
		return n, err
	}
}

// readFailed tells whether a Read of the connection returned an error
// (a reset, EOF, a timeout, a close of ours). When go-imap's client stops
// reading without one, what it read did not parse.
func (g *guard) readFailed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.readErr
}

// scan follows the framing: text up to CRLF, where a line ending in {N}
// or {N+} announces N bytes of literal that follow before the line goes on.
func (g *guard) scan(b []byte) error {
	_, err := g.scanUntil(b, false)
	return err
}

// scanUntil is scan that, when stop is set, returns after the first whole
// response, with how many bytes of b it read.
func (g *guard) scanUntil(b []byte, stop bool) (int, error) {
	all := len(b)
	for len(b) > 0 {
		g.edge = false
		if g.lit > 0 {
			k := min(g.lit, int64(len(b)))
			g.lit -= k
			b = b[k:]
			continue
		}
		seg := b
		nl := bytes.IndexByte(b, '\n')
		if nl >= 0 {
			seg = b[:nl+1]
		}
		b = b[len(seg):]
		g.lineLen += int64(len(seg))
		if g.lineLen > g.maxLine {
			return 0, fmt.Errorf("%w: response line longer than %d bytes", ErrServerFault, g.maxLine)
		}
		if n := min(cap(g.head)-len(g.head), len(seg)); n > 0 {
			g.head = append(g.head, seg[:n]...)
		}
		g.tail = keepTail(g.tail, seg)
		if err := g.caps.scan(seg); err != nil {
			return 0, err
		}
		if nl < 0 {
			continue
		}
		if n, ok := literalSize(g.tail); ok {
			g.respLit += n
			if n < 0 || g.respLit > g.maxLiteral {
				return 0, fmt.Errorf("%w: response with literals of more than %d bytes", ErrServerFault, g.maxLiteral)
			}
			g.lit = n
			g.tail = g.tail[:0]
			g.caps.literal()
			continue
		}
		g.caps = capScan{}
		if bytes.HasPrefix(bytes.ToUpper(g.head), []byte("* BYE")) {
			g.mu.Lock()
			g.bye = true
			g.mu.Unlock()
		}
		g.lineLen, g.respLit = 0, 0
		g.head, g.tail = g.head[:0], g.tail[:0]
		g.edge = true
		if stop {
			return all - len(b), nil
		}
	}
	return all, nil
}

// capScan follows the text of a response (literals and quoted strings
// left out) for a capability list that go-imap's client cannot read: its
// reader takes a "(" where it expects a space between capabilities for a
// space, and loops on it for ever, a core busy and the connection never
// closed. The lists are those of "* CAPABILITY", "* ENABLED" and a
// "[CAPABILITY" response code; a "(" that follows the keyword across
// nothing but spaces and atoms ends the connection as a server fault.
type capScan struct {
	head   [len(capLead)]byte // the response's first bytes
	n      int                // of head filled; len(head)+1: past a literal
	code   int                // bytes matched of "[CAPABILITY"
	after  bool               // a keyword has just been matched
	in     bool               // within a capability list
	quoted bool
	esc    bool
}

const (
	capLead     = "* CAPABILITY"
	enabledLead = "* ENABLED"
	capCode     = "[CAPABILITY"
)

// scan reads seg, the next text of the response.
func (s *capScan) scan(seg []byte) (err error) {
	if s.n == 0 && len(seg) >= 3 && (seg[0] != '*' || seg[1] != ' ' || seg[2]|0x20 != 'c' && seg[2]|0x20 != 'e') {
		s.n = len(s.head) // no keyword leads this response
	}
	if s.n >= len(s.head) && s.idle() && bytes.IndexByte(seg, '[') < 0 && bytes.IndexByte(seg, '"') < 0 {
		return nil // most lines: nothing to look at
	}
	*s, err = s.scanned(seg)
	return err
}

func (s *capScan) idle() bool {
	return !s.after && !s.in && !s.quoted && !s.esc && s.code == 0
}

// foldedIs tells whether b is k (in capitals) but for the case of letters.
func foldedIs(b []byte, k string) bool {
	for i := range len(b) {
		if c := k[i]; b[i] != c && (c < 'A' || c > 'Z' || b[i] != c+'a'-'A') {
			return false
		}
	}
	return len(b) == len(k)
}

// indexEither is the index in b of the first c or d, or -1.
func indexEither(b []byte, c, d byte) int {
	i, j := bytes.IndexByte(b, c), bytes.IndexByte(b, d)
	if i < 0 || j >= 0 && j < i {
		return j
	}
	return i
}

// scanned is scan's loop, on a copy of the state: cheaper than a write
// through a pointer for every byte.
func (s capScan) scanned(seg []byte) (capScan, error) {
	for i := 0; i < len(seg); {
		if s.n >= len(s.head) && !s.after && !s.in && s.code == 0 && !s.esc {
			// Most text matters not: skip to where it may.
			var j int
			if s.quoted {
				j = indexEither(seg[i:], '"', '\\')
			} else {
				j = indexEither(seg[i:], '"', '[')
			}
			if j < 0 {
				return s, nil
			}
			i += j
		}
		b := seg[i]
		i++
		lead := false // b ends a leading keyword
		if s.n < len(s.head) {
			s.head[s.n] = b
			s.n++
			lead = s.n == len(capLead) && foldedIs(s.head[:s.n], capLead) ||
				s.n == len(enabledLead) && foldedIs(s.head[:s.n], enabledLead)
		}
		if s.quoted {
			switch {
			case s.esc:
				s.esc = false
			case b == '\\':
				s.esc = true
			case b == '"':
				s.quoted = false
			}
			continue
		}
		if s.after {
			// A keyword followed by more of an atom is another word.
			s.after, s.in = false, !atomChar(b)
		}
		if s.in {
			switch {
			case b == '(':
				return s, fmt.Errorf("%w: a parenthesis in a capability list", ErrServerFault)
			case b != ' ' && !atomChar(b):
				s.in = false
			}
		}
		switch {
		case b == '"':
			s.quoted, s.code = true, 0
		case b == capCode[s.code]:
			s.code++
			if s.code == len(capCode) {
				s.code, s.after = 0, true
			}
		case b == capCode[0]:
			s.code = 1
		default:
			s.code = 0
		}
		s.after = s.after || lead
	}
	return s, nil
}

// literal notes a literal in the response: what follows it is no longer
// at the response's start, nor within a list or a quoted string.
func (s *capScan) literal() { *s = capScan{n: len(s.head) + 1} }

// atomChar is an ATOM-CHAR as go-imap reads it (a byte of 0x80 to 0x9f
// is a control character to it).
func atomChar(b byte) bool {
	switch b {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return b > 0x1f && (b < 0x7f || b > 0x9f)
}

// keepTail appends seg to tail, keeping its last cap(tail) bytes.
func keepTail(tail, seg []byte) []byte {
	if len(seg) >= cap(tail) {
		return append(tail[:0], seg[len(seg)-cap(tail):]...)
	}
	if over := len(tail) + len(seg) - cap(tail); over > 0 {
		tail = tail[:copy(tail, tail[over:])]
	}
	return append(tail, seg...)
}

// literalSize reads the announcement "{N}\r\n" or "{N+}\r\n" at the end of
// a line. A size too large to parse is reported as -1.
func literalSize(tail []byte) (int64, bool) {
	t, ok := bytes.CutSuffix(tail, []byte("}\r\n"))
	if !ok {
		return 0, false
	}
	t = bytes.TrimSuffix(t, []byte("+"))
	open := bytes.LastIndexByte(t, '{')
	if open < 0 || open == len(t)-1 {
		if open < 0 && len(tail) == cap(tail) {
			return -1, true // digits longer than the tail: absurd
		}
		return 0, false
	}
	digits := t[open+1:]
	for _, d := range digits {
		if d < '0' || d > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil {
		return -1, true
	}
	return n, true
}

// fault returns the error that ended the connection, or one for data
// after BYE: a pass checks it before it acts on what it read.
func (g *guard) fault() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return g.err
	}
	if g.bye {
		return fmt.Errorf("%w: the server said BYE", ErrServerFault)
	}
	return nil
}

func (g *guard) expired() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.timedOut
}

// SetReadDeadline is go-imap's; the earlier of it and the command deadline
// applies.
func (g *guard) SetReadDeadline(t time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.theirs = t
	return g.applyLocked()
}

// arm sets the command deadline d from now (zero: none), and starts
// counting the bytes of the answer against maxAnswer.
func (g *guard) arm(d time.Duration) { g.armFor(d, 0) }

// armFor is arm for a command whose answer may legitimately take extra
// bytes beyond maxAnswer (a FETCH of many messages).
func (g *guard) armFor(d time.Duration, extra int64) {
	g.answered.Store(0)
	if g.maxAnswer > 0 {
		g.answerCap.Store(g.maxAnswer + max(extra, 0))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.mine = time.Time{}
	if d > 0 {
		g.mine = time.Now().Add(d)
	}
	g.applyLocked()
}

func (g *guard) applyLocked() error {
	if g.poked {
		return g.Conn.SetReadDeadline(time.Unix(1, 0)) // until Read wakes
	}
	t := g.theirs
	if !g.mine.IsZero() && (t.IsZero() || g.mine.Before(t)) {
		t = g.mine
	}
	return g.Conn.SetReadDeadline(t)
}

// closeGrace is how long closing a connection may wait for TLS's goodbye
// (its close_notify) before the socket is closed under it.
const closeGrace = time.Second

// Close closes the connection within closeGrace, whatever the server
// does. TLS's Close writes a close_notify first (with 5 s for it), under
// the lock of TLS's output, which a write that TLS makes itself while
// reading (an alert, the answer to a KeyUpdate) may hold: that write has
// no deadline once go-imap has cleared its own after a command, and a
// server that stops reading keeps it blocked for as long as it likes. The
// socket closed under them ends both writes. A deadline would not do:
// go-imap and TLS each set their own.
func (g *guard) Close() error {
	t := time.AfterFunc(closeGrace, func() { g.raw.Close() })
	defer t.Stop()
	return g.Conn.Close()
}

func (g *guard) SetDeadline(t time.Time) error {
	if err := g.SetReadDeadline(t); err != nil {
		return err
	}
	return g.Conn.SetWriteDeadline(t)
}

// connect opens the TLS connection to the server: implicit TLS, or our own
// STARTTLS exchange in plaintext (bounded, like everything the server
// sends) so the guard can sit above TLS. After STARTTLS the guard serves
// go-imap a greeting of its own, since the server sends none.
func (w *worker) connect(ctx context.Context) (*guard, error) {
	ctx, cancel := context.WithTimeout(ctx, w.e.opts.DialTimeout)
	defer cancel()
	d := &net.Dialer{}
	raw, err := d.DialContext(ctx, "tcp", w.cfg.Addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		raw.SetDeadline(dl)
	}
	tc := w.cfg.tlsConfig()
	var greeting []byte
	if w.cfg.Security == StartTLS {
		if err := startTLS(raw); err != nil {
			raw.Close()
			return nil, err
		}
		greeting = []byte("* OK TLS established\r\n")
	} else if tc.NextProtos == nil {
		tc.NextProtos = []string{"imap"}
	}
	tlsConn := tls.Client(raw, tc)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	raw.SetDeadline(time.Time{})
	g := newGuard(tlsConn, w.e.opts.MaxLine, w.e.opts.MaxLiteral)
	g.maxAnswer = w.e.opts.MaxAnswer
	g.pre = greeting
	return g, nil
}

// errStartTLS is a STARTTLS exchange that went wrong where the server
// answered: not a transport failure.
type errStartTLS struct{ msg string }

func (e *errStartTLS) Error() string { return "upstream: STARTTLS: " + e.msg }

// startTLS reads the greeting and asks for STARTTLS on a plaintext
// connection. PREAUTH is refused, and so is anything the server sends
// after its OK before the handshake (it would be read as if encrypted).
func startTLS(conn net.Conn) error {
	br := bufio.NewReaderSize(conn, 1024)
	readLine := func() (string, error) {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", &errStartTLS{"line longer than 1024 bytes"}
		}
		if err != nil {
			return "", err
		}
		return string(line), nil
	}
	g, err := readLine()
	if err != nil {
		return err
	}
	switch {
	case len(g) >= 4 && g[:4] == "* OK":
	case len(g) >= 9 && g[:9] == "* PREAUTH":
		return &errStartTLS{"server sent PREAUTH on an unencrypted connection"}
	default:
		return &errStartTLS{fmt.Sprintf("greeting %q", truncate(g, 80))}
	}
	if _, err := io.WriteString(conn, "S STARTTLS\r\n"); err != nil {
		return err
	}
	for range 32 {
		l, err := readLine()
		if err != nil {
			return err
		}
		if len(l) >= 2 && l[:2] == "S " {
			if len(l) < 5 || l[:5] != "S OK " && l[:5] != "S OK\r" {
				return &errStartTLS{fmt.Sprintf("refused: %q", truncate(l, 80))}
			}
			if br.Buffered() > 0 {
				return &errStartTLS{"data after the OK, before TLS"}
			}
			return nil
		}
	}
	return &errStartTLS{"no answer"}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
