package imapserver

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
	"strings"
	"sync"

	"github.com/emersion/go-message/textproto"
)

// scanEntity reads an appended e-mail once, line by line through a small
// buffer, and returns the MIME tree parseEntity would make of the whole
// message, with where each entity lies and how many lines its body has
// instead of its body bytes. Laying out a message read whole took a
// buffer of its size per layout (300-740 KB for a voicemail appended as
// e-mail), the largest short-lived memory of imaptest's stress run.
//
// ok is false for a message scanEntity leaves to parseEntity: a header
// block of more than maxScanHeader bytes (the whole message is a header
// when it has no blank line) or a boundary of more than maxScanBoundary.
func scanEntity(r io.Reader) (root *entity, ok bool, err error) {
	br := scanReaders.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		br.Reset(nil)
		scanReaders.Put(br)
	}()
	return scanFrom(br)
}

// scanFrom is scanEntity reading through br.
func scanFrom(br *bufio.Reader) (root *entity, ok bool, err error) {
	s := &mimeScan{br: br}
	root = &entity{scanned: true}
	s.stack = []*scanFrame{{e: root, inHeader: true, defType: "text/plain"}}
	for {
		if !s.top().inHeader {
			s.skipBody()
		}
		more, err := s.readLine()
		if errors.Is(err, errScanFallback) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		if s.line.n > 0 {
			if err := s.handleLine(); err != nil {
				if errors.Is(err, errScanFallback) {
					return nil, false, nil
				}
				return nil, false, err
			}
		}
		if !more {
			break
		}
	}
	s.closeAbove(-1, s.pos, s.nl)
	return root, true, nil
}

const (
	// scanBufSize is the buffer scanEntity reads through; longer lines
	// are read in pieces.
	scanBufSize = 16 << 10
	// maxScanHeader bounds the header block of one entity scanEntity
	// keeps.
	maxScanHeader = 64 << 10
	// maxScanBoundary bounds a boundary scanEntity looks for (RFC 2046
	// allows 70 characters); a delimiter fits the start of a long line
	// it keeps (lineHead).
	maxScanBoundary = 900
	lineHead        = 1024
)

var errScanFallback = errors.New("imapserver: message left to the whole-message parser")

var scanReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, scanBufSize) }}

// mimeScan is scanEntity's state: the open entities, outermost first, and
// the line just read.
type mimeScan struct {
	br    *bufio.Reader
	pos   int64   // offset of the line being handled
	nl    int64   // line breaks before pos
	last  [2]byte // the last two bytes read, last[1] the very last
	stack []*scanFrame
	line  scanLine
}

// scanLine is one line: all of it when it fits the buffer, else its first
// lineHead bytes and, when an entity's header is being read, all of it.
type scanLine struct {
	start, n int64
	broken   bool    // it ends in a line break
	prev     [2]byte // the two bytes before it
	head     []byte  // the line, or its first bytes when long
	long     bool
	tailWS   bool   // when long: the bytes after head are all white space
	all      []byte // when long and a header is being read: the whole line
	headBuf  []byte
}

// scanFrame is one open entity.
type scanFrame struct {
	e        *entity
	depth    int
	defType  string
	inHeader bool
	nlBody   int64 // line breaks before the body
	// An open multipart: its delimiter ("--" and the boundary) until its
	// close delimiter, the type of its parts, and whether one has begun.
	delim     []byte
	childType string
	partOpen  bool
	partStart int64
}

func (s *mimeScan) top() *scanFrame { return s.stack[len(s.stack)-1] }

// readLine reads the next line into s.line; more is false at the end of
// the message.
func (s *mimeScan) readLine() (more bool, err error) {
	l := &s.line
	*l = scanLine{start: s.pos, prev: s.last, headBuf: l.headBuf[:0]}
	keep := s.top().inHeader
	for {
		chunk, err := s.br.ReadSlice('\n')
		switch len(chunk) {
		case 0:
		case 1:
			s.last = [2]byte{s.last[1], chunk[0]}
		default:
			s.last = [2]byte{chunk[len(chunk)-2], chunk[len(chunk)-1]}
		}
		if l.n == 0 && err != bufio.ErrBufferFull {
			l.head = chunk
		} else {
			if l.n == 0 {
				l.long, l.tailWS = true, true
			}
			take := min(lineHead-len(l.headBuf), len(chunk))
			l.headBuf = append(l.headBuf, chunk[:take]...)
			l.head = l.headBuf
			l.tailWS = l.tailWS && onlyWS(chunk[take:])
		}
		if l.long && keep {
			if len(l.all)+len(chunk) > maxScanHeader {
				return false, errScanFallback
			}
			l.all = append(l.all, chunk...)
		}
		l.n += int64(len(chunk))
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return false, nil
		}
		l.broken = err == nil
		return err == nil, err
	}
}

// skipBody passes over the buffered whole lines that do not start with
// "-", at the start of a line of a body: they are no delimiters, and only
// their line breaks count. A base64 body is thousands of short lines, and
// reading them one by one was most of the scan's time.
func (s *mimeScan) skipBody() {
	for {
		buf, _ := s.br.Peek(s.br.Buffered())
		if len(buf) == 0 {
			if _, err := s.br.Peek(1); err != nil {
				return // readLine meets the end or the error
			}
			continue
		}
		if buf[0] == '-' {
			return
		}
		n := bytes.Index(buf, []byte("\n-")) + 1
		stop := n > 0
		if !stop {
			n = bytes.LastIndexByte(buf, '\n') + 1
			if n == 0 {
				return // a line longer than what is buffered
			}
		}
		skip := buf[:n]
		s.nl += int64(bytes.Count(skip, []byte("\n")))
		if n >= 2 {
			s.last = [2]byte{skip[n-2], skip[n-1]}
		} else {
			s.last = [2]byte{s.last[1], skip[0]}
		}
		s.pos += int64(n)
		s.br.Discard(n)
		if stop {
			return
		}
	}
}

func onlyWS(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// delimiter reports whether the line is a delimiter line of delim, and
// whether it is the close delimiter, as splitMultipart reads them.
func (l *scanLine) delimiter(delim []byte) (is, close bool) {
	if !bytes.HasPrefix(l.head, delim) || (l.long && !l.tailWS) {
		return false, false
	}
	rest := bytes.TrimRight(l.head[len(delim):], " \t\r\n")
	if len(rest) == 0 {
		return true, false
	}
	if string(rest) == "--" {
		return true, true
	}
	return false, false
}

func (s *mimeScan) handleLine() error {
	l := &s.line
	defer func() {
		s.pos = l.start + l.n
		if l.broken {
			s.nl++
		}
	}()
	if bytes.HasPrefix(l.head, []byte("--")) {
		for i, f := range s.stack {
			if f.delim == nil {
				continue
			}
			is, closing := l.delimiter(f.delim)
			if !is {
				continue
			}
			at := l.start
			if f.partOpen {
				stop, nlStop := at, s.nl
				if stop > f.partStart && l.prev[1] == '\n' {
					stop--
					nlStop--
					if stop > f.partStart && l.prev[0] == '\r' {
						stop--
					}
				}
				s.closeAbove(i, stop, nlStop)
			}
			if closing {
				f.delim = nil
				f.partOpen = false
				return nil
			}
			f.partOpen, f.partStart = true, at+l.n
			s.push(&scanFrame{e: &entity{scanned: true, headerStart: at + l.n}, depth: f.depth + 1, defType: f.childType, inHeader: true})
			return nil
		}
	}
	f := s.top()
	if !f.inHeader {
		return nil
	}
	b := l.head
	if l.long {
		b = l.all
	}
	if len(f.e.header)+len(b) > maxScanHeader {
		return errScanFallback
	}
	f.e.header = append(f.e.header, b...)
	if !l.long && (string(b) == "\n" || string(b) == "\r\n") {
		return s.endHeader(f, l.start+l.n, s.nl+1)
	}
	return nil
}

func (s *mimeScan) push(f *scanFrame) { s.stack = append(s.stack, f) }

// endHeader ends f's header block at bodyStart (its blank line read) and
// opens its body: the parts of a multipart, the message of a
// message/rfc822.
func (s *mimeScan) endHeader(f *scanFrame, bodyStart, nlBody int64) error {
	f.inHeader = false
	e := f.e
	e.bodyStart, f.nlBody = bodyStart, nlBody
	e.parseHeader(f.defType)
	if f.depth >= maxMIMEDepth {
		return nil
	}
	switch {
	case e.typ == "multipart":
		b := e.params["boundary"]
		if len(b) > maxScanBoundary {
			return errScanFallback
		}
		if b != "" {
			f.delim = []byte("--" + b)
		}
		f.childType = "text/plain"
		if e.sub == "digest" {
			f.childType = "message/rfc822"
		}
	case e.typ == "message" && e.sub == "rfc822":
		s.push(&scanFrame{e: &entity{scanned: true, headerStart: bodyStart}, depth: f.depth + 1, defType: "text/plain", inHeader: true})
	}
	return nil
}

// closeAbove ends the entities above stack[i] at stop, innermost first,
// each joining its parent.
func (s *mimeScan) closeAbove(i int, stop, nlStop int64) {
	for j := len(s.stack) - 1; j > i; j-- {
		f := s.stack[j]
		s.finish(f, stop, nlStop)
		if j > 0 {
			p := s.stack[j-1]
			if p.e.typ == "multipart" && !p.inHeader {
				p.e.children = append(p.e.children, f.e)
			} else {
				p.e.msg = f.e
			}
		}
	}
	s.stack = s.stack[:i+1]
}

// finish ends f's entity at stop, as parseEntity reads the bytes up to
// there: a header whose blank line lies past stop was no header's end, and
// the entity has no body.
func (s *mimeScan) finish(f *scanFrame, stop, nlStop int64) {
	e := f.e
	if e.headerStart > stop {
		e.headerStart = stop // begun after the line break before a delimiter
	}
	if !f.inHeader && stop >= e.bodyStart {
		e.end, e.lines = stop, nlStop-f.nlBody
		return
	}
	e.header = e.header[:stop-e.headerStart]
	e.bodyStart, e.end, e.lines = stop, stop, 0
	e.children, e.msg = nil, nil
	e.parseHeader(f.defType)
	if f.depth < maxMIMEDepth && e.typ == "message" && e.sub == "rfc822" {
		// parseEntity reads the missing body as an empty message.
		m := &entity{scanned: true, headerStart: stop, bodyStart: stop, end: stop}
		m.parseHeader("text/plain")
		e.msg = m
	}
}

// parseHeader parses the entity's header block, as parseEntity does.
func (e *entity) parseHeader(defType string) {
	var err error
	e.h, err = textproto.ReadHeader(headerReader(e.header))
	e.bad = err != nil
	ct := e.h.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	if ct == "" || err != nil {
		mt, params = defType, map[string]string{}
		if mt == "text/plain" {
			params["charset"] = "us-ascii"
		}
	}
	e.typ, e.sub, _ = strings.Cut(mt, "/")
	e.params = params
}
