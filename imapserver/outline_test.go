package imapserver

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
)

// layoutSamples are appended e-mails of the shapes FETCH must take apart:
// plain, multipart, nested, embedded messages, bare LF line ends, no body.
var layoutSamples = map[string]string{
	"plain":      "From: a@example.com\r\nSubject: hi\r\nTo: b@example.com\r\n\r\nline one\r\nline two\r\n",
	"mixed":      "From: a@example.com\r\nSubject: x\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b1\r\nContent-Type: audio/wav\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"v.wav\"\r\n\r\nUklGRg==\r\n--b1--\r\nepilogue\r\n",
	"nested":     "Subject: n\r\nContent-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n--inner\r\nContent-Type: text/plain\r\n\r\nplain\r\n--inner\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--inner--\r\n--outer\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@example.com\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=deep\r\n\r\n--deep\r\n\r\ndeep text\r\n--deep--\r\n--outer--\r\n",
	"lf":         "From: a@example.com\nSubject: lf\nContent-Type: multipart/mixed; boundary=z\n\n--z\n\none\n--z\nContent-Type: text/plain\n\ntwo\n--z--\n",
	"headeronly": "From: a@example.com\r\nSubject: none\r\n",
	"empty":      "",
	"noparts":    "Content-Type: multipart/mixed; boundary=q\r\n\r\nno delimiter at all\r\n",
	"digest":     "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: in digest\r\n\r\nbody\r\n--d--\r\n",
	"rfc822bare": "Content-Type: message/rfc822\r\n\r\nSubject: only a header\r\n",
}

func layoutSections() []*imap.FetchItemBodySection {
	var out []*imap.FetchItemBodySection
	paths := [][]int{nil, {1}, {2}, {3}, {1, 1}, {1, 2}, {2, 1}, {2, 1, 1}, {2, 2}, {0}}
	for _, p := range paths {
		for _, spec := range []imap.PartSpecifier{imap.PartSpecifierNone, imap.PartSpecifierHeader, imap.PartSpecifierText, imap.PartSpecifierMIME} {
			if spec == imap.PartSpecifierMIME && len(p) == 0 {
				continue
			}
			out = append(out, &imap.FetchItemBodySection{Part: p, Specifier: spec})
			out = append(out, &imap.FetchItemBodySection{Part: p, Specifier: spec, Partial: &imap.SectionPartial{Offset: 3, Size: 7}})
			out = append(out, &imap.FetchItemBodySection{Part: p, Specifier: spec, Partial: &imap.SectionPartial{Offset: 1 << 20, Size: 7}})
		}
		out = append(out,
			&imap.FetchItemBodySection{Part: p, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"subject", "FROM"}},
			&imap.FetchItemBodySection{Part: p, Specifier: imap.PartSpecifierHeader, HeaderFieldsNot: []string{"Subject"}},
			&imap.FetchItemBodySection{Part: p, Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"Subject"}, Partial: &imap.SectionPartial{Offset: 2, Size: 5}},
		)
	}
	return out
}

// TestLayoutSections: every body section served from a message's layout
// (a range of the stored bytes, or the header kept) is byte for byte what
// parsing the whole message gives.
func TestLayoutSections(t *testing.T) {
	for name, msg := range layoutSamples {
		// Spare capacity, as a read buffer may have: offsets must not
		// count it.
		b := append(make([]byte, 0, len(msg)+64), msg...)
		l, cost := newLayout(b, parseEntity(b, 0, "text/plain"), nil)
		if cost <= int64(len(l.header)) {
			t.Errorf("%s: layout charged %d, want more than its header's %d bytes", name, cost, len(l.header))
		}
		for _, item := range layoutSections() {
			want := extractBodySection(b, item)
			got := layoutBytes(t, l.section(item), l.header, b, item)
			if !bytes.Equal(got, want) {
				t.Errorf("%s: BODY[%s] from the layout = %q, want %q", name, sectionName(item), got, want)
			}
			if len(item.Part) > 0 {
				continue
			}
			// A section of the whole message needs its header alone.
			if got := layoutBytes(t, topSection(l.header, int64(len(b)), item), l.header, b, item); !bytes.Equal(got, want) {
				t.Errorf("%s: BODY[%s] from the header alone = %q, want %q", name, sectionName(item), got, want)
			}
		}
	}
}

// layoutBytes serves item, mapped to rs, as rawBodySection does, reading
// ranges of content.
func layoutBytes(t *testing.T, rs rawSection, head, content []byte, item *imap.FetchItemBodySection) []byte {
	t.Helper()
	read := func(off, n int64) []byte {
		r, err := openRange(bytes.NewReader(content), off, n)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	data := rs.data
	if data == nil && rs.filter == nil {
		off, n := clip(rs.off, rs.n, item.Partial)
		return read(off, n)
	}
	if data == nil {
		data = read(rs.off, rs.n)
	}
	if rs.filter != nil {
		data = headerFields(data, rs.filter, rs.not)
	}
	return partialOf(data, item.Partial)
}

func sectionName(item *imap.FetchItemBodySection) string {
	var parts []string
	for _, n := range item.Part {
		parts = append(parts, fmt.Sprint(n))
	}
	s := strings.Join(parts, ".")
	if item.Specifier != imap.PartSpecifierNone {
		s += "." + string(item.Specifier)
	}
	if len(item.HeaderFields) > 0 {
		s += ".FIELDS " + strings.Join(item.HeaderFields, " ")
	}
	if len(item.HeaderFieldsNot) > 0 {
		s += ".FIELDS.NOT " + strings.Join(item.HeaderFieldsNot, " ")
	}
	if item.Partial != nil {
		s += fmt.Sprintf("<%d.%d>", item.Partial.Offset, item.Partial.Size)
	}
	return s
}

// TestOpenRangeWithoutSeek: content that cannot seek is skipped by
// reading.
func TestOpenRangeWithoutSeek(t *testing.T) {
	r, err := openRange(io.MultiReader(strings.NewReader("0123456789")), 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	if string(b) != "3456" {
		t.Errorf("openRange(3, 4) read %q, want %q", b, "3456")
	}
}

// FuzzLayoutSections: for any bytes stored as an e-mail, every body
// section served from the layout or the header alone is what parsing the
// whole message gives.
func FuzzLayoutSections(f *testing.F) {
	for _, msg := range layoutSamples {
		f.Add([]byte(msg))
	}
	items := layoutSections()
	f.Fuzz(func(t *testing.T, b []byte) {
		l, _ := newLayout(b, parseEntity(b, 0, "text/plain"), nil)
		// The header FETCH reads alone is the one the parse finds.
		head, err := um.RenderEmail(um.Message{Raw: true, Size: int64(len(b))}, um.RenderOptions{}).ReadHeader(bytes.NewReader(b))
		if err != nil || !bytes.Equal(head, l.header) {
			t.Fatalf("ReadHeader of %q = %q, %v; the parse's header is %q", b, head, err, l.header)
		}
		for _, item := range items {
			want := extractBodySection(b, item)
			if got := layoutBytes(t, l.section(item), l.header, b, item); !bytes.Equal(got, want) {
				t.Fatalf("BODY[%s] of %q from the layout = %q, want %q", sectionName(item), b, got, want)
			}
			if len(item.Part) == 0 {
				if got := layoutBytes(t, topSection(l.header, int64(len(b)), item), l.header, b, item); !bytes.Equal(got, want) {
					t.Fatalf("BODY[%s] of %q from the header = %q, want %q", sectionName(item), b, got, want)
				}
			}
		}
	})
}
