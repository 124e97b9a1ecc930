package imapserver

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-imap/v2"
)

// Budgets of the command parser. A command line (everything but its
// literals) is read into no buffer larger than maxCommandBytes; a string
// literal other than APPEND's message is held in memory only up to
// maxStringLiteral (maxPreLoginLiteral before login). The grammar nests
// lists only where RFC 3501 does, except SEARCH criteria, whose nesting
// and number of keys are capped so that no command costs more than its
// bytes suggest.
const (
	maxCommandBytes    = 64 << 10
	maxStringLiteral   = 64 << 10
	maxPreLoginLiteral = 1 << 10
	maxSearchDepth     = 100
	maxSearchKeys      = 500
	// maxDiscardLiteral is the largest refused non-synchronizing literal
	// whose bytes are read and dropped; a larger one closes the connection,
	// since reading it would cost more than the client deserves.
	maxDiscardLiteral = 1 << 20
)

// protoError is a command the server will not run: answered BAD (or NO)
// with code and text. fatal ones end the connection after the answer,
// because the rest of the stream cannot be told apart from commands.
type protoError struct {
	typ   imap.StatusResponseType
	code  imap.ResponseCode
	text  string
	fatal bool
}

func (e *protoError) Error() string { return "imapserver: " + e.text }

func badSyntax(format string, args ...any) error {
	return &protoError{typ: imap.StatusResponseTypeBad, code: imap.ResponseCodeClientBug, text: fmt.Sprintf(format, args...)}
}

var (
	errLineTooLong = &protoError{typ: imap.StatusResponseTypeBad, code: imap.ResponseCodeTooBig, text: "Command line too long", fatal: true}
)

// decoder reads one command at a time from the client. Every byte outside
// literals counts against maxCommandBytes.
type decoder struct {
	br *bufio.Reader
	n  int // bytes of the current command read, literals aside
	// cont asks the client for a synchronizing literal ("+ Ready").
	cont func() error
	// maxLiteral is the largest string literal accepted now.
	maxLiteral int64
	// pendingLiteral is set while a refused literal announced at the end
	// of the line has still to be dealt with by skipLine.
	lastLiteral *literalHeader
}

type literalHeader struct {
	size    int64
	nonSync bool
	binary  bool
}

func (d *decoder) start() { d.n, d.lastLiteral = 0, nil }

func (d *decoder) readByte() (byte, error) {
	b, err := d.br.ReadByte()
	if err != nil {
		return 0, err
	}
	d.n++
	if d.n > maxCommandBytes {
		return 0, errLineTooLong
	}
	return b, nil
}

func (d *decoder) unread() {
	d.br.UnreadByte()
	d.n--
}

func (d *decoder) peek() (byte, error) {
	b, err := d.br.Peek(1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// accept consumes c when it comes next.
func (d *decoder) accept(c byte) bool {
	b, err := d.peek()
	if err != nil || b != c {
		return false
	}
	d.readByte()
	return true
}

func (d *decoder) expect(c byte) error {
	b, err := d.readByte()
	if err != nil {
		return err
	}
	if b != c {
		d.unread()
		return badSyntax("Expected %q", c)
	}
	return nil
}

func (d *decoder) sp() error { return d.expect(' ') }

// crlf reads the end of the command, tolerating a bare LF.
func (d *decoder) crlf() error {
	b, err := d.readByte()
	if err != nil {
		return err
	}
	if b == '\r' {
		b, err = d.readByte()
		if err != nil {
			return err
		}
	}
	if b != '\n' {
		d.unread()
		return badSyntax("Expected end of command")
	}
	return nil
}

func isAtomChar(b byte) bool {
	switch b {
	case '(', ')', '{', ' ', '%', '*', '"', '\\', ']':
		return false
	}
	return b > 0x1f && b < 0x7f
}

// token reads the longest run of bytes for which ok holds; it fails on an
// empty run.
func (d *decoder) token(ok func(byte) bool, what string) (string, error) {
	var sb strings.Builder
	for {
		b, err := d.readByte()
		if err != nil {
			return "", err
		}
		if !ok(b) {
			d.unread()
			break
		}
		sb.WriteByte(b)
	}
	if sb.Len() == 0 {
		return "", badSyntax("Expected %s", what)
	}
	return sb.String(), nil
}

func (d *decoder) atom() (string, error) { return d.token(isAtomChar, "atom") }

func isTagChar(b byte) bool { return isAtomChar(b) && b != '+' || b == ']' }

func (d *decoder) number() (uint32, error) {
	s, err := d.token(func(b byte) bool { return b >= '0' && b <= '9' }, "number")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, badSyntax("Number out of range")
	}
	return uint32(n), nil
}

func (d *decoder) number64() (uint64, error) {
	s, err := d.token(func(b byte) bool { return b >= '0' && b <= '9' }, "number")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil {
		return 0, badSyntax("Number out of range")
	}
	return n, nil
}

// quoted reads a quoted string; the opening quote is next.
func (d *decoder) quoted() (string, error) {
	if err := d.expect('"'); err != nil {
		return "", err
	}
	var sb strings.Builder
	for {
		b, err := d.readByte()
		if err != nil {
			return "", err
		}
		switch b {
		case '"':
			return sb.String(), nil
		case '\\':
			if b, err = d.readByte(); err != nil {
				return "", err
			}
			if b != '"' && b != '\\' {
				return "", badSyntax("Bad escape in quoted string")
			}
		case '\r', '\n':
			d.unread()
			return "", badSyntax("Unterminated quoted string")
		}
		sb.WriteByte(b)
	}
}

// literalHeader reads "{n}" or "{n+}" (and "~{n}" when binary is
// allowed) and the CRLF after it; the literal's bytes are next.
func (d *decoder) literalHeader(binary bool) (*literalHeader, error) {
	h := &literalHeader{}
	if binary && d.accept('~') {
		h.binary = true
	}
	if err := d.expect('{'); err != nil {
		return nil, err
	}
	n, err := d.number64()
	if err != nil {
		return nil, err
	}
	h.size = int64(n)
	h.nonSync = d.accept('+')
	if err := d.expect('}'); err != nil {
		return nil, err
	}
	if err := d.crlf(); err != nil {
		return nil, err
	}
	d.lastLiteral = h
	return h, nil
}

// refuseLiteral is the error for a literal the server will not read: the
// client of a synchronizing one waits for "+" and sends nothing more of
// the command; a non-synchronizing one is on its way and is read and
// dropped by skipLine, or ends the connection when too large.
func refuseLiteral(h *literalHeader, code imap.ResponseCode, text string) error {
	typ := imap.StatusResponseTypeNo
	if code == imap.ResponseCodeClientBug {
		typ = imap.StatusResponseTypeBad
	}
	return &protoError{typ: typ, code: code, text: text, fatal: h.nonSync && h.size > maxDiscardLiteral}
}

// acceptLiteral asks for a synchronizing literal's bytes, once the caller
// has decided to read them.
func (d *decoder) acceptLiteral(h *literalHeader) error {
	d.lastLiteral = nil
	if !h.nonSync {
		return d.cont()
	}
	return nil
}

// str reads a string (quoted or literal) of at most maxLiteral bytes.
func (d *decoder) str() (string, error) {
	b, err := d.peek()
	if err != nil {
		return "", err
	}
	if b == '"' {
		return d.quoted()
	}
	if b != '{' {
		return "", badSyntax("Expected string")
	}
	h, err := d.literalHeader(false)
	if err != nil {
		return "", err
	}
	if h.size > d.maxLiteral {
		return "", refuseLiteral(h, imap.ResponseCodeTooBig, "Literal too large")
	}
	if err := d.acceptLiteral(h); err != nil {
		return "", err
	}
	buf := make([]byte, h.size)
	if _, err := io.ReadFull(d.br, buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

func isAStringChar(b byte) bool { return isAtomChar(b) || b == ']' }

// astring reads an atom (with "]") or a string.
func (d *decoder) astring() (string, error) {
	b, err := d.peek()
	if err != nil {
		return "", err
	}
	if b == '"' || b == '{' {
		return d.str()
	}
	return d.token(isAStringChar, "string")
}

// mailbox reads a folder name and decodes modified UTF-7.
func (d *decoder) mailbox() (string, error) {
	s, err := d.astring()
	if err != nil {
		return "", err
	}
	if strings.EqualFold(s, "INBOX") {
		return "INBOX", nil
	}
	name, err := utf7Decode(s)
	if err != nil {
		// No folder has such a name: the command fails on a missing
		// folder, as for any other unknown name.
		return s, nil
	}
	return name, nil
}

// listMailbox reads a LIST pattern: an atom with "%" and "*", or a string.
func (d *decoder) listMailbox() (string, error) {
	b, err := d.peek()
	if err != nil {
		return "", err
	}
	var s string
	if b == '"' || b == '{' {
		s, err = d.str()
	} else {
		s, err = d.token(func(b byte) bool { return isAStringChar(b) || b == '%' || b == '*' }, "pattern")
	}
	if err != nil {
		return "", err
	}
	name, err := utf7Decode(s)
	if err != nil {
		return s, nil // matches no folder
	}
	return name, nil
}

// list reads "(" item *(SP item) ")", calling item for each; an empty
// list is allowed.
// atoms parses a parenthesized list of atoms, such as options and
// modifiers, calling each with the atom in upper case.
func (d *decoder) atoms(each func(name string) error) error {
	return d.list(func() error {
		a, err := d.atom()
		if err != nil {
			return err
		}
		return each(strings.ToUpper(a))
	})
}

func (d *decoder) list(item func() error) error {
	if err := d.expect('('); err != nil {
		return err
	}
	if d.accept(')') {
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		if d.accept(')') {
			return nil
		}
		if err := d.sp(); err != nil {
			return err
		}
	}
}

// flag reads a flag: an atom, optionally after "\".
func (d *decoder) flag() (string, error) {
	if d.accept('\\') {
		if d.accept('*') {
			return `\*`, nil
		}
		a, err := d.atom()
		return `\` + a, err
	}
	return d.atom()
}

func (d *decoder) flagList() ([]imap.Flag, error) {
	var flags []imap.Flag
	err := d.list(func() error {
		f, err := d.flag()
		flags = append(flags, imap.Flag(f))
		return err
	})
	return flags, err
}

// numSet reads a sequence set; "$" is the saved search result.
func (d *decoder) numSet(uid bool) (imap.NumSet, error) {
	if d.accept('$') {
		return imap.SearchRes(), nil
	}
	s, err := d.token(func(b byte) bool { return b >= '0' && b <= '9' || b == ':' || b == ',' || b == '*' }, "sequence set")
	if err != nil {
		return nil, err
	}
	var seqs imap.SeqSet
	var uids imap.UIDSet
	for _, part := range strings.Split(s, ",") {
		a, b, isRange := strings.Cut(part, ":")
		start, err := seqNumber(a)
		if err != nil {
			return nil, err
		}
		stop := start
		if isRange {
			if stop, err = seqNumber(b); err != nil {
				return nil, err
			}
		}
		if uid {
			uids = append(uids, imap.UIDRange{Start: imap.UID(start), Stop: imap.UID(stop)})
		} else {
			seqs = append(seqs, imap.SeqRange{Start: start, Stop: stop})
		}
	}
	if uid {
		return uids, nil
	}
	return seqs, nil
}

// seqNumber reads one end of a range: 0 stands for "*".
func seqNumber(s string) (uint32, error) {
	if s == "*" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 {
		return 0, badSyntax("Bad sequence set")
	}
	return uint32(n), nil
}

// skipLine reads and drops the rest of a command the server refused, so
// the next command starts at a line boundary. A non-synchronizing literal
// at the end of a line is read and dropped too, since its bytes are on
// their way and must never run as commands; a synchronizing one was not
// asked for, so the client sends nothing more.
func (d *decoder) skipLine() error {
	if h := d.lastLiteral; h != nil {
		d.lastLiteral = nil
		if !h.nonSync {
			return nil
		}
		if h.size > maxDiscardLiteral {
			return errLineTooLong
		}
		if _, err := io.CopyN(io.Discard, d.br, h.size); err != nil {
			return err
		}
	}
	var tail []byte
	for {
		b, err := d.br.ReadByte()
		if err != nil {
			return err
		}
		d.n++
		if d.n > maxCommandBytes {
			return errLineTooLong
		}
		if b != '\n' {
			tail = append(tail, b)
			if len(tail) > 32 {
				tail = tail[1:]
			}
			continue
		}
		h := trailingLiteral(tail)
		if h == nil || !h.nonSync {
			return nil
		}
		if h.size > maxDiscardLiteral {
			return errLineTooLong
		}
		if _, err := io.CopyN(io.Discard, d.br, h.size); err != nil {
			return err
		}
		tail = tail[:0]
	}
}

// trailingLiteral parses a "{n}" or "{n+}" that ends a line (the bytes
// before its LF), or returns nil.
func trailingLiteral(line []byte) *literalHeader {
	s := strings.TrimSuffix(string(line), "\r")
	if !strings.HasSuffix(s, "}") {
		return nil
	}
	i := strings.LastIndexByte(s, '{')
	if i < 0 {
		return nil
	}
	num := s[i+1 : len(s)-1]
	h := &literalHeader{}
	if strings.HasSuffix(num, "+") {
		h.nonSync, num = true, num[:len(num)-1]
	}
	n, err := strconv.ParseUint(num, 10, 63)
	if err != nil {
		return nil
	}
	h.size = int64(n)
	return h
}

// encoder writes responses. Errors stick: the connection's writer keeps
// the first, and every later write is dropped.
type encoder struct {
	w *bufio.Writer
}

func (e *encoder) raw(s string)  { e.w.WriteString(s) }
func (e *encoder) byte(b byte)   { e.w.WriteByte(b) }
func (e *encoder) sp()           { e.w.WriteByte(' ') }
func (e *encoder) crlf()         { e.w.WriteString("\r\n") }
func (e *encoder) num(n uint32)  { e.w.WriteString(strconv.FormatUint(uint64(n), 10)) }
func (e *encoder) num64(n int64) { e.w.WriteString(strconv.FormatInt(n, 10)) }
func (e *encoder) date(t time.Time) {
	e.w.WriteString(`"` + t.Format("_2-Jan-2006 15:04:05 -0700") + `"`)
}

// string writes s quoted when it can be, else as a literal.
func (e *encoder) string(s string) {
	if len(s) > 1024 || !quotable(s) {
		e.w.WriteString("{" + strconv.Itoa(len(s)) + "}\r\n")
		e.w.WriteString(s)
		return
	}
	e.w.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			e.w.WriteByte('\\')
		}
		e.w.WriteByte(s[i])
	}
	e.w.WriteByte('"')
}

func quotable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' || s[i] == '\n' || s[i] == 0 || s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func (e *encoder) nstring(s string) {
	if s == "" {
		e.w.WriteString("NIL")
		return
	}
	e.string(s)
}

// mailbox writes a folder name in modified UTF-7.
func (e *encoder) mailbox(name string) {
	if strings.EqualFold(name, "INBOX") {
		e.w.WriteString("INBOX")
		return
	}
	e.string(utf7Encode(name))
}

func (e *encoder) flags(flags []imap.Flag) {
	e.byte('(')
	for i, f := range flags {
		if i > 0 {
			e.sp()
		}
		e.raw(string(f))
	}
	e.byte(')')
}

// utf7Encode encodes a folder name in IMAP's modified UTF-7 (RFC 3501
// section 5.1.3).
func utf7Encode(s string) string {
	var sb strings.Builder
	var pending []uint16
	flush := func() {
		if len(pending) == 0 {
			return
		}
		b := make([]byte, 0, len(pending)*2)
		for _, u := range pending {
			b = append(b, byte(u>>8), byte(u))
		}
		sb.WriteByte('&')
		sb.WriteString(utf7Enc.EncodeToString(b))
		sb.WriteByte('-')
		pending = pending[:0]
	}
	for _, r := range s {
		if r >= 0x20 && r <= 0x7e {
			flush()
			if r == '&' {
				sb.WriteString("&-")
			} else {
				sb.WriteRune(r)
			}
			continue
		}
		if r >= 0x10000 {
			r -= 0x10000
			pending = append(pending, uint16(0xd800+(r>>10)), uint16(0xdc00+(r&0x3ff)))
		} else {
			pending = append(pending, uint16(r))
		}
	}
	flush()
	return sb.String()
}

var (
	errUTF7 = errors.New("imapserver: bad modified UTF-7")
	utf7Enc = base64.NewEncoding("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,").WithPadding(base64.NoPadding).Strict()
)

// utf7Decode decodes IMAP's modified UTF-7, refusing what no encoder
// writes (so a name has one spelling).
func utf7Decode(s string) (string, error) {
	if !strings.Contains(s, "&") {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] > 0x7e {
				if utf8.ValidString(s) {
					return s, nil // a client sending UTF-8: take it
				}
				return "", errUTF7
			}
		}
		return s, nil
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '&' {
			sb.WriteByte(c)
			continue
		}
		j := strings.IndexByte(s[i+1:], '-')
		if j < 0 {
			return "", errUTF7
		}
		enc := s[i+1 : i+1+j]
		i += j + 1
		if enc == "" {
			sb.WriteByte('&')
			continue
		}
		b, err := utf7Enc.DecodeString(enc)
		if err != nil || len(b)%2 != 0 {
			return "", errUTF7
		}
		for k := 0; k < len(b); k += 2 {
			u := rune(b[k])<<8 | rune(b[k+1])
			if u >= 0xd800 && u < 0xdc00 {
				if k+3 >= len(b) {
					return "", errUTF7
				}
				u2 := rune(b[k+2])<<8 | rune(b[k+3])
				if u2 < 0xdc00 || u2 >= 0xe000 {
					return "", errUTF7
				}
				u = 0x10000 + (u-0xd800)<<10 + (u2 - 0xdc00)
				k += 2
			} else if u >= 0xdc00 && u < 0xe000 {
				return "", errUTF7
			}
			if u >= 0x20 && u <= 0x7e {
				return "", errUTF7 // printable ASCII must be written as itself
			}
			sb.WriteRune(u)
		}
	}
	return sb.String(), nil
}

// args reads a command's arguments in sequence: after the first error
// every step does nothing, and end returns that error.
type args struct {
	c   *conn
	err error
}

func (c *conn) args() *args { return &args{c: c} }

func (a *args) sp() *args {
	if a.err == nil {
		a.err = a.c.dec.sp()
	}
	return a
}

func (a *args) astring() string {
	if a.err != nil {
		return ""
	}
	s, err := a.c.dec.astring()
	a.err = err
	return s
}

func (a *args) mailbox() string {
	if a.err != nil {
		return ""
	}
	s, err := a.c.dec.mailbox()
	a.err = err
	return s
}

func (a *args) numSet(uid bool) imap.NumSet {
	if a.err != nil {
		return nil
	}
	s, err := a.c.dec.numSet(uid)
	a.err = err
	return s
}

// end reads the end of the command, unless a step failed.
func (a *args) end() error {
	if a.err == nil {
		a.err = a.c.end()
	}
	return a.err
}
