package imapserver

import (
	"io"

	"github.com/emersion/go-imap/v2"
)

// An appended e-mail (a Raw message) is parsed once per rendering kept in
// the cache, not once per FETCH item: its layout keeps the top-level header
// and where each MIME part lies in the stored content, so BODY[...] and
// RFC822.* are served as byte ranges read from the store, and
// HEADER.FIELDS from the header at hand. Reading and parsing the whole
// message for every section of every FETCH was more than half of the
// server's CPU time under imaptest's stress run.

// layout is where the parts of a Raw message lie in its content.
type layout struct {
	header []byte // the top-level header block with its blank line
	root   *rawPart
}

// rawPart is one MIME entity of a Raw message, as offsets into its content:
// the header block is [headerStart, bodyStart), the body [bodyStart, end).
type rawPart struct {
	headerStart, bodyStart, end int64
	children                    []*rawPart // multipart
	msg                         *rawPart   // message/rfc822
}

// rawPartCost is what a rawPart is charged in the render cache.
const rawPartCost = 96

// newLayout builds the layout of the Raw message b from its parse, root,
// and returns what to charge for it; b is nil when root comes from
// scanEntity. It keeps head as the header when not nil (the same bytes,
// read before), else a copy: b is not kept.
func newLayout(b []byte, root *entity, head []byte) (*layout, int64) {
	// The entity's slices share b's array: where one starts in b is told
	// by how much of b's capacity is left after it. An empty entity of an
	// empty body may have a nil header, which lies where its parent ends.
	offset := func(x []byte, at int64) int64 {
		if cap(x) == 0 {
			return at
		}
		return int64(cap(b) - cap(x))
	}
	n := int64(0)
	var walk func(e *entity, at int64) *rawPart
	walk = func(e *entity, at int64) *rawPart {
		n++
		var s *rawPart
		if e.scanned {
			s = &rawPart{headerStart: e.headerStart, bodyStart: e.bodyStart, end: e.end}
		} else {
			s = &rawPart{headerStart: offset(e.header, at)}
			s.bodyStart = s.headerStart + int64(len(e.header))
			s.end = s.bodyStart + int64(len(e.body))
		}
		for _, c := range e.children {
			s.children = append(s.children, walk(c, s.end))
		}
		if e.msg != nil {
			s.msg = walk(e.msg, s.end)
		}
		return s
	}
	l := &layout{header: head, root: walk(root, int64(len(b)))}
	cost := n * rawPartCost
	if head == nil {
		l.header = append([]byte{}, root.header...)
		cost += int64(len(l.header))
	}
	return l, cost
}

// part returns the part a section path names, as entity.part does.
func (s *rawPart) part(path []int) *rawPart {
	return partOf(s, path, func(s *rawPart) []*rawPart { return s.children }, func(s *rawPart) *rawPart { return s.msg })
}

// rawSection is where BODY[section] of a Raw message lies, before any
// partial range: a range of the content, or bytes at hand (data, when
// not nil). filter, when not nil, names the header fields to keep (or,
// with not, drop) of the header block the range holds.
type rawSection struct {
	off, n int64
	data   []byte
	filter []string
	not    bool
}

// section maps a body section to the content, as extractBodySection
// reads it from the whole message.
func (l *layout) section(item *imap.FetchItemBodySection) rawSection {
	empty := rawSection{data: []byte{}}
	e := l.root
	if len(item.Part) > 0 {
		if e = e.part(item.Part); e == nil {
			return empty
		}
	}
	switch item.Specifier {
	case imap.PartSpecifierNone:
		if len(item.Part) == 0 {
			return rawSection{off: 0, n: e.end}
		}
		return rawSection{off: e.bodyStart, n: e.end - e.bodyStart}
	case imap.PartSpecifierMIME:
		return rawSection{off: e.headerStart, n: e.bodyStart - e.headerStart}
	case imap.PartSpecifierHeader, imap.PartSpecifierText:
		m := e
		if len(item.Part) > 0 {
			if e.msg == nil {
				return empty
			}
			m = e.msg
		}
		if item.Specifier == imap.PartSpecifierText {
			return rawSection{off: m.bodyStart, n: m.end - m.bodyStart}
		}
		s := rawSection{off: m.headerStart, n: m.bodyStart - m.headerStart}
		if m == l.root {
			s.data = l.header
		}
		switch {
		case len(item.HeaderFields) > 0:
			s.filter = item.HeaderFields
		case len(item.HeaderFieldsNot) > 0:
			s.filter, s.not = item.HeaderFieldsNot, true
		}
		return s
	}
	return empty
}

// topSection maps a section of the whole message (no part path) to the
// content knowing only its header and size: no layout is needed.
func topSection(head []byte, size int64, item *imap.FetchItemBodySection) rawSection {
	l := layout{header: head, root: &rawPart{bodyStart: int64(len(head)), end: max(size, int64(len(head)))}}
	return l.section(item)
}

// openRange returns a reader of n bytes of rc from off, seeking when rc
// can.
func openRange(rc io.Reader, off, n int64) (io.Reader, error) {
	if off > 0 {
		if sk, ok := rc.(io.Seeker); ok {
			if _, err := sk.Seek(off, io.SeekStart); err != nil {
				return nil, err
			}
		} else if _, err := io.CopyN(io.Discard, rc, off); err != nil {
			return nil, err
		}
	}
	return io.LimitReader(rc, n), nil
}
