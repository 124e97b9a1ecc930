package imapserver

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-message/textproto"
)

// This file reads appended e-mail (messages um did not render) for FETCH
// and SEARCH: the MIME tree, ENVELOPE, BODYSTRUCTURE and sections.
// Hostile input is bounded: nesting beyond maxMIMEDepth is read as an
// opaque body, and nothing here allocates more than the message's size a
// few times over.

const maxMIMEDepth = 16

// entity is one MIME entity: a message, a part, or an embedded message.
type entity struct {
	header   []byte // the header block with its ending blank line
	body     []byte
	h        textproto.Header
	typ, sub string
	params   map[string]string
	children []*entity // multipart
	msg      *entity   // message/rfc822
	bad      bool      // the header did not parse to its end

	// scanned says the entity comes from scanEntity, which keeps no body:
	// it lies at [headerStart, end) in the message, its body from
	// bodyStart, and lines is its body's line count.
	scanned                     bool
	headerStart, bodyStart, end int64
	lines                       int64
}

// bodySize is the length of the entity's body.
func (e *entity) bodySize() int64 {
	if e.scanned {
		return e.end - e.bodyStart
	}
	return int64(len(e.body))
}

// bodyLines is the number of lines of the entity's body.
func (e *entity) bodyLines() int64 {
	if e.scanned {
		return e.lines
	}
	return countLines(e.body)
}

// splitHeader cuts an entity into header block and body. It looks at the
// header's lines only: a body of several hundred KB is not scanned.
func splitHeader(b []byte) (header, body []byte) {
	if bytes.HasPrefix(b, []byte("\r\n")) {
		return b[:2], b[2:]
	}
	if bytes.HasPrefix(b, []byte("\n")) {
		return b[:1], b[1:]
	}
	for off := 0; ; {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return b, nil
		}
		next := off + i + 1 // the start of the next line
		switch {
		case next < len(b) && b[next] == '\n':
			return b[:next+1], b[next+1:]
		case next+1 < len(b) && b[next] == '\r' && b[next+1] == '\n':
			return b[:next+2], b[next+2:]
		}
		off = next
	}
}

// headerReader reads a header block through a buffer of its size: the
// default 4 KB one for every part of every message laid out was a tenth of
// what the server allocated.
func headerReader(header []byte) *bufio.Reader {
	return bufio.NewReaderSize(bytes.NewReader(header), len(header))
}

func parseEntity(b []byte, depth int, defType string) *entity {
	e := &entity{}
	e.header, e.body = splitHeader(b)
	e.parseHeader(defType)
	params := e.params
	if depth >= maxMIMEDepth {
		return e
	}
	switch {
	case e.typ == "multipart":
		childType := "text/plain"
		if e.sub == "digest" {
			childType = "message/rfc822"
		}
		for _, p := range splitMultipart(e.body, params["boundary"]) {
			e.children = append(e.children, parseEntity(p, depth+1, childType))
		}
	case e.typ == "message" && e.sub == "rfc822":
		e.msg = parseEntity(e.body, depth+1, "text/plain")
	}
	return e
}

// splitMultipart returns the body parts of a multipart body: the bytes
// between boundary delimiter lines, without the line break that belongs to
// the next delimiter.
func splitMultipart(body []byte, boundary string) [][]byte {
	if boundary == "" {
		return nil
	}
	delim := []byte("--" + boundary)
	var parts [][]byte
	start := -1
	// Look for the delimiter itself rather than at every line: a base64
	// body has thousands of lines and no delimiter among them.
	for off := 0; off < len(body); {
		k := bytes.Index(body[off:], delim)
		if k < 0 {
			break
		}
		at := off + k
		if at > 0 && body[at-1] != '\n' {
			off = at + 1 // not at the start of a line
			continue
		}
		line, next := body[at:], len(body)
		if end := bytes.IndexByte(line, '\n'); end >= 0 {
			line, next = body[at:at+end], at+end+1
		}
		if len(line) < len(delim) {
			off = next // a boundary holding a line break matches no line
			continue
		}
		rest := bytes.TrimRight(line[len(delim):], " \t\r")
		if len(rest) == 0 || bytes.Equal(rest, []byte("--")) {
			if start >= 0 {
				stop := at
				if stop > start && body[stop-1] == '\n' {
					stop--
					if stop > start && body[stop-1] == '\r' {
						stop--
					}
				}
				parts = append(parts, body[start:stop])
			}
			if len(rest) > 0 {
				return parts
			}
			start = next
		}
		off = next
	}
	if start >= 0 && start <= len(body) {
		parts = append(parts, body[start:])
	}
	return parts
}

// part returns the entity a section path names (RFC 3501 6.4.5), or nil.
func (e *entity) part(path []int) *entity {
	return partOf(e, path, func(e *entity) []*entity { return e.children }, func(e *entity) *entity { return e.msg })
}

// partOf walks a section path down a MIME tree (of entities, or of their
// layouts) and returns the zero T when the path names no part.
func partOf[T comparable](root T, path []int, children func(T) []T, msg func(T) T) T {
	var none T
	cur := root
	for i, n := range path {
		// Below the first level, the parts of an embedded message are
		// those of the message it holds.
		if m := msg(cur); i > 0 && m != none {
			cur = m
		}
		switch kids := children(cur); {
		case kids != nil:
			if n < 1 || n > len(kids) {
				return none
			}
			cur = kids[n-1]
		case n == 1:
			// A non-multipart entity is its own part 1.
		default:
			return none
		}
	}
	return cur
}

func countLines(b []byte) int64 { return int64(bytes.Count(b, []byte("\n"))) }

// structure is an entity's BODYSTRUCTURE.
func (e *entity) structure() imap.BodyStructure {
	var disp *imap.BodyStructureDisposition
	if d := e.h.Get("Content-Disposition"); d != "" {
		if v, p, err := mime.ParseMediaType(d); err == nil {
			disp = &imap.BodyStructureDisposition{Value: v, Params: p}
		}
	}
	var lang []string
	if l := e.h.Get("Content-Language"); l != "" {
		for _, s := range strings.Split(l, ",") {
			if s = strings.TrimSpace(s); s != "" {
				lang = append(lang, s)
			}
		}
	}
	loc := e.h.Get("Content-Location")
	if e.typ == "multipart" {
		mp := &imap.BodyStructureMultiPart{
			Subtype:  e.sub,
			Extended: &imap.BodyStructureMultiPartExt{Params: e.params, Disposition: disp, Language: lang, Location: loc},
		}
		for _, c := range e.children {
			mp.Children = append(mp.Children, c.structure())
		}
		if len(mp.Children) == 0 {
			// A multipart without parts is shown as one empty text part.
			mp.Children = []imap.BodyStructure{&imap.BodyStructureSinglePart{Type: "text", Subtype: "plain", Params: map[string]string{"charset": "us-ascii"}, Encoding: "7bit", Text: &imap.BodyStructureText{}}}
		}
		return mp
	}
	enc := strings.TrimSpace(e.h.Get("Content-Transfer-Encoding"))
	if enc == "" {
		enc = "7bit"
	}
	sp := &imap.BodyStructureSinglePart{
		Type: e.typ, Subtype: e.sub, Params: e.params,
		ID: e.h.Get("Content-Id"), Description: e.h.Get("Content-Description"),
		Encoding: enc, Size: uint32(e.bodySize()),
		Extended: &imap.BodyStructureSinglePartExt{Disposition: disp, Language: lang, Location: loc},
	}
	switch {
	case e.msg != nil:
		sp.MessageRFC822 = &imap.BodyStructureMessageRFC822{Envelope: extractEnvelope(e.msg.h), BodyStructure: e.msg.structure(), NumLines: e.bodyLines()}
	case e.typ == "text":
		sp.Text = &imap.BodyStructureText{NumLines: e.bodyLines()}
	}
	return sp
}

// headerFields returns the fields of a header block that names keeps (or,
// with not, drops), in their order, and the blank line that ends them.
func headerFields(header []byte, names []string, not bool) []byte {
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[strings.ToLower(n)] = true
	}
	var out bytes.Buffer
	keep := false
	for off := 0; off < len(header); {
		end := bytes.IndexByte(header[off:], '\n')
		next := len(header)
		if end >= 0 {
			next = off + end + 1
		}
		line := header[off:next]
		off = next
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
		if line[0] != ' ' && line[0] != '\t' {
			name, _, ok := bytes.Cut(line, []byte(":"))
			keep = ok && want[strings.ToLower(strings.TrimSpace(string(name)))] != not
		}
		if keep {
			out.Write(line)
		}
	}
	out.WriteString("\r\n")
	return out.Bytes()
}

// extractBodySection returns BODY[section] of a whole message, before any
// partial range.
func extractBodySection(b []byte, item *imap.FetchItemBodySection) []byte {
	root := parseEntity(b, 0, "text/plain")
	e := root
	if len(item.Part) > 0 {
		if e = root.part(item.Part); e == nil {
			return nil
		}
	}
	var out []byte
	switch item.Specifier {
	case imap.PartSpecifierNone:
		if len(item.Part) == 0 {
			out = b
		} else {
			out = e.body
		}
	case imap.PartSpecifierMIME:
		out = e.header
	case imap.PartSpecifierHeader, imap.PartSpecifierText:
		m := e
		if len(item.Part) > 0 {
			if e.msg == nil {
				return nil
			}
			m = e.msg
		}
		switch {
		case item.Specifier == imap.PartSpecifierText:
			out = m.body
		case len(item.HeaderFields) > 0:
			out = headerFields(m.header, item.HeaderFields, false)
		case len(item.HeaderFieldsNot) > 0:
			out = headerFields(m.header, item.HeaderFieldsNot, true)
		default:
			out = m.header
		}
	}
	return partialOf(out, item.Partial)
}

func partialOf(b []byte, p *imap.SectionPartial) []byte {
	if p == nil {
		return b
	}
	if p.Offset >= int64(len(b)) {
		return []byte{}
	}
	b = b[p.Offset:]
	if p.Size < int64(len(b)) {
		b = b[:p.Size]
	}
	return b
}

// decoded returns an entity's body with its transfer encoding undone.
func (e *entity) decoded() []byte {
	switch strings.ToLower(strings.TrimSpace(e.h.Get("Content-Transfer-Encoding"))) {
	case "base64":
		clean := bytes.Map(func(r rune) rune {
			if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
				return -1
			}
			return r
		}, e.body)
		out := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
		n, _ := base64.StdEncoding.Decode(out, clean)
		return out[:n]
	case "quoted-printable":
		out, _ := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(e.body)))
		return out
	}
	return e.body
}

// extractBinarySection returns BINARY[part]: the part's content decoded;
// the whole message for an empty path.
func extractBinarySection(b []byte, item *imap.FetchItemBinarySection) []byte {
	if len(item.Part) == 0 {
		return partialOf(b, item.Partial)
	}
	e := parseEntity(b, 0, "text/plain").part(item.Part)
	if e == nil {
		return nil
	}
	return partialOf(e.decoded(), item.Partial)
}

func extractBinarySectionSize(b []byte, item *imap.FetchItemBinarySectionSize) uint32 {
	return uint32(len(extractBinarySection(b, &imap.FetchItemBinarySection{Part: item.Part})))
}

var wordDecoder = &mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
	return r, nil // unknown charsets pass as they are
}}

func decodeWords(s string) string {
	if d, err := wordDecoder.DecodeHeader(s); err == nil {
		return d
	}
	return s
}

// extractEnvelope builds the ENVELOPE of a header (RFC 3501 7.4.2).
func extractEnvelope(h textproto.Header) *imap.Envelope {
	env := &imap.Envelope{
		Subject: decodeWords(strings.TrimSpace(h.Get("Subject"))),
		From:    parseAddressList(h.Get("From")),
		Sender:  parseAddressList(h.Get("Sender")),
		ReplyTo: parseAddressList(h.Get("Reply-To")),
		To:      parseAddressList(h.Get("To")),
		Cc:      parseAddressList(h.Get("Cc")),
		Bcc:     parseAddressList(h.Get("Bcc")),
	}
	if d := strings.TrimSpace(h.Get("Date")); d != "" {
		if t, err := mail.ParseDate(d); err == nil {
			env.Date = t
		}
	}
	if env.Date.IsZero() {
		env.Date = time.Time{}
	}
	env.InReplyTo = msgIDs(h.Get("In-Reply-To"))
	if ids := msgIDs(h.Get("Message-Id")); len(ids) > 0 {
		env.MessageID = ids[0]
	}
	return env
}

// msgIDs reads the <...> message IDs of a header value.
func msgIDs(s string) []string {
	var ids []string
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			return ids
		}
		j := strings.IndexByte(s[i:], '>')
		if j < 0 {
			return ids
		}
		if id := strings.TrimSpace(s[i+1 : i+j]); id != "" {
			ids = append(ids, id)
		}
		s = s[i+j+1:]
	}
}

// addrParser reads an RFC 5322 address list leniently: comments are
// skipped (a comment after an address without a display name becomes
// its name), groups give the start and end markers of RFC 3501.
type addrParser struct {
	s       string
	comment string // the last comment skipped
}

func (p *addrParser) skipCFWS() {
	for len(p.s) > 0 {
		switch c := p.s[0]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			p.s = p.s[1:]
		case c == '(':
			depth, i := 0, 0
			for ; i < len(p.s); i++ {
				if p.s[i] == '\\' {
					i++
					continue
				}
				if p.s[i] == '(' {
					depth++
				} else if p.s[i] == ')' {
					if depth--; depth == 0 {
						break
					}
				}
			}
			if i >= len(p.s) {
				p.comment, p.s = strings.TrimSpace(p.s[1:]), ""
				return
			}
			p.comment, p.s = strings.TrimSpace(p.s[1:i]), p.s[i+1:]
		default:
			return
		}
	}
}

// word reads an atom (dots and @ excluded when strict) or a quoted string.
func (p *addrParser) word(stop string) (string, bool) {
	p.skipCFWS()
	if p.s == "" {
		return "", false
	}
	if p.s[0] == '"' {
		var sb strings.Builder
		i := 1
		for ; i < len(p.s) && p.s[i] != '"'; i++ {
			if p.s[i] == '\\' && i+1 < len(p.s) {
				i++
			}
			sb.WriteByte(p.s[i])
		}
		p.s = p.s[min(i+1, len(p.s)):]
		return sb.String(), true
	}
	i := 0
	for i < len(p.s) && !strings.ContainsRune(stop+" \t\r\n(\"", rune(p.s[i])) {
		i++
	}
	if i == 0 {
		return "", false
	}
	w := p.s[:i]
	p.s = p.s[i:]
	return w, true
}

// phrase reads words up to one of stop.
func (p *addrParser) phrase(stop string) string {
	var words []string
	for {
		w, ok := p.word(stop)
		if !ok {
			return strings.Join(words, " ")
		}
		words = append(words, w)
	}
}

// addrSpec reads local@domain, with an optional source route before it.
func (p *addrParser) addrSpec(stop string) (a imap.Address) {
	p.skipCFWS()
	route := ""
	if strings.HasPrefix(p.s, "@") {
		if i := strings.IndexByte(p.s, ':'); i >= 0 {
			route = strings.Join(strings.Fields(p.s[:i]), "")
			p.s = p.s[i+1:]
		}
	}
	defer func() {
		if route != "" {
			a.Name = routeMarker + route
		}
	}()
	a.Mailbox = p.localPart(stop)
	if p.skipCFWS(); strings.HasPrefix(p.s, "@") {
		p.s = p.s[1:]
		a.Host = p.domain(stop)
	}
	return a
}

// routeMarker starts the Name of an address with a source route:
// imap.Address has no field for it, so route and display name ride in
// Name, which addressName takes apart again for writeAddresses.
const routeMarker = "\x00route:"

func (p *addrParser) localPart(stop string) string {
	var parts []string
	for {
		w, ok := p.word(stop + "@.")
		if !ok {
			break
		}
		parts = append(parts, w)
		if p.skipCFWS(); !strings.HasPrefix(p.s, ".") {
			break
		}
		p.s = p.s[1:]
	}
	return strings.Join(parts, ".")
}

func (p *addrParser) domain(stop string) string {
	p.skipCFWS()
	if strings.HasPrefix(p.s, "[") {
		i := strings.IndexByte(p.s, ']')
		if i < 0 {
			i = len(p.s) - 1
		}
		d := p.s[:i+1]
		p.s = p.s[i+1:]
		return d
	}
	return p.localPart(stop)
}

// parseAddressList reads an address header. Nil for an empty one.
func parseAddressList(s string) []imap.Address {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil
	}
	p := &addrParser{s: s}
	var out []imap.Address
	inGroup := false
	for len(p.s) > 0 && len(out) < 1000 {
		p.skipCFWS()
		if p.s == "" {
			break
		}
		switch p.s[0] {
		case ',':
			p.s = p.s[1:]
			continue
		case ';':
			p.s = p.s[1:]
			if inGroup {
				out = append(out, imap.Address{})
				inGroup = false
			}
			continue
		}
		before := len(p.s)
		p.comment = ""
		// A display name or a local part: which, the next character says.
		save := p.s
		name := p.phrase(",;:<@")
		p.skipCFWS()
		switch {
		case strings.HasPrefix(p.s, ":") && !inGroup:
			p.s = p.s[1:]
			out = append(out, imap.Address{Mailbox: decodeWords(name)})
			inGroup = true
		case strings.HasPrefix(p.s, "<"):
			p.s = p.s[1:]
			a := p.addrSpec(">,;")
			if i := strings.IndexByte(p.s, '>'); i >= 0 {
				p.s = p.s[i+1:]
			}
			if !strings.HasPrefix(a.Name, routeMarker) || name != "" {
				if strings.HasPrefix(a.Name, routeMarker) {
					a.Name = routeMarker + strings.TrimPrefix(a.Name, routeMarker) + "\x00" + decodeWords(name)
				} else {
					a.Name = decodeWords(name)
				}
			}
			out = append(out, a)
		default:
			// An addr-spec: read it again as one.
			p.s = save
			p.comment = ""
			a := p.addrSpec(",;")
			p.skipCFWS()
			if a.Name == "" && p.comment != "" {
				a.Name = decodeWords(p.comment)
			}
			if a.Mailbox != "" || a.Host != "" {
				out = append(out, a)
			}
		}
		if len(p.s) == before {
			p.s = p.s[1:] // no progress: skip a stray character
		}
	}
	if inGroup {
		out = append(out, imap.Address{})
	}
	return out
}

// addressName splits the Name of an address from parseAddressList into
// the display name and the source route.
func addressName(a imap.Address) (name, route string) {
	if !strings.HasPrefix(a.Name, routeMarker) {
		return a.Name, ""
	}
	route, name, _ = strings.Cut(strings.TrimPrefix(a.Name, routeMarker), "\x00")
	return name, route
}

// toSevenBit rewrites the parts of a message that hold NUL bytes (APPENDed
// as a binary literal, RFC 3516) in base64, so that BODY[] never sends a
// NUL, which IMAP literals may not hold; BINARY[] decodes them back. A
// message without NUL comes back as it is.
func toSevenBit(msg []byte) []byte {
	if bytes.IndexByte(msg, 0) < 0 {
		return msg
	}
	msg = msg[:len(msg):len(msg)]
	type edit struct {
		off, end int
		with     []byte
	}
	var edits []edit
	offset := func(b []byte) int { return cap(msg) - cap(b) }
	var walk func(e *entity)
	walk = func(e *entity) {
		switch {
		case e.children != nil:
			for _, c := range e.children {
				walk(c)
			}
		case e.msg != nil:
			walk(e.msg)
		case bytes.IndexByte(e.body, 0) >= 0 && len(e.header) > 0:
			h := headerFields(e.header, []string{"Content-Transfer-Encoding"}, true)
			h = append(h[:len(h)-2:len(h)-2], "Content-Transfer-Encoding: base64\r\n\r\n"...)
			var body bytes.Buffer
			enc := base64.StdEncoding.EncodeToString(e.body)
			for len(enc) > 76 {
				body.WriteString(enc[:76] + "\r\n")
				enc = enc[76:]
			}
			body.WriteString(enc + "\r\n")
			start := offset(e.header)
			edits = append(edits, edit{start, start + len(e.header) + len(e.body), append(h, body.Bytes()...)})
		}
	}
	walk(parseEntity(msg, 0, "text/plain"))
	var out bytes.Buffer
	last := 0
	for _, ed := range edits {
		if ed.off < last || ed.end > len(msg) {
			return msg // overlapping parts: leave the message alone
		}
		out.Write(msg[last:ed.off])
		out.Write(ed.with)
		last = ed.end
	}
	out.Write(msg[last:])
	return out.Bytes()
}
