package um_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/google/uuid"

	"github.com/embeddedum/um"
)

// The golden files are regenerated with `go test -run TestRenderGolden -update`.
// The flag is looked up rather than owned, so another test file of the
// package may define it too.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files in testdata")
	}
}

func updating() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// testAudio returns n bytes of a fixed pattern that uses every byte value.
func testAudio(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func testMessage(size int) um.Message {
	return um.Message{
		ID:           uuid.MustParse("0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9"),
		Folder:       um.Inbox,
		UID:          7,
		CallerNumber: "+4930123",
		CallerName:   "Alice Example",
		Time:         time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC),
		Duration:     42 * time.Second,
		AudioType:    "audio/wav",
		Size:         int64(size),
	}
}

// render writes e with audio as content and fails t on error.
func render(t testing.TB, e *um.Email, audio []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	n, err := e.WriteTo(&b, bytes.NewReader(audio))
	if err != nil {
		t.Fatalf("WriteTo() error = %v", err)
	}
	if n != int64(b.Len()) {
		t.Fatalf("WriteTo() = %d, but wrote %d bytes", n, b.Len())
	}
	return b.Bytes()
}

func goldenCases() []struct {
	name string
	m    um.Message
	opts um.RenderOptions
} {
	normal := testMessage(300)
	urgent := testMessage(300)
	urgent.CallerName = "Jürgen Müller-Lüdenscheidt, \"Jr.\""
	urgent.CallerNumber = "+49 (30) 555-0199"
	urgent.Urgent = true
	urgent.Duration = 3*time.Minute + 7400*time.Millisecond
	urgent.Transcript = "Hallo, hier ist Jürgen.\r\nBitte ruf zurück, es ist dringend: die Lieferung für morgen früh ist noch nicht bestätigt und der Spediteur wartet auf Antwort.\n"
	zero := testMessage(0)
	zero.Duration = 0
	zero.AudioType = "audio/ogg; codecs=opus"
	unknown := testMessage(57)
	unknown.CallerName, unknown.CallerNumber = "", ""
	unknown.AudioType = ""
	return []struct {
		name string
		m    um.Message
		opts um.RenderOptions
	}{
		{"normal", normal, um.RenderOptions{Mailbox: "1001"}},
		{"urgent", urgent, um.RenderOptions{Domain: "pbx.example.com", To: `"Bob Example" <bob@example.com>`, Location: time.FixedZone("CET", 3600)}},
		{"zero-duration", zero, um.RenderOptions{}},
		{"unknown-caller", unknown, um.RenderOptions{Mailbox: "1001"}},
		{"german", urgent, um.RenderOptions{Mailbox: "1001", Location: time.FixedZone("CET", 3600), Texts: germanTexts}},
	}
}

func TestRenderGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := render(t, um.RenderEmail(tc.m, tc.opts), testAudio(int(tc.m.Size)))
			path := filepath.Join("testdata", "render-"+tc.name+".eml")
			if updating() {
				if err := os.MkdirAll("testdata", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestRenderGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("rendered %s differs from %s:\n%s", tc.name, path, got)
			}
			checkWellFormed(t, got)
		})
	}
}

// checkWellFormed checks the line discipline: CRLF only, lines within 78
// characters except single encoded words that cannot be split.
func checkWellFormed(t testing.TB, msg []byte) {
	t.Helper()
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		t.Errorf("message does not end with CRLF")
	}
	for i, line := range strings.Split(strings.TrimSuffix(string(msg), "\r\n"), "\r\n") {
		if strings.ContainsAny(line, "\r\n") {
			t.Errorf("line %d has a bare CR or LF: %q", i+1, line)
		}
		if len(line) > 78 {
			t.Errorf("line %d is %d characters long: %q", i+1, len(line), line)
		}
		for _, c := range []byte(line) {
			if c >= 0x80 {
				t.Errorf("line %d has 8-bit data: %q", i+1, line)
				break
			}
		}
	}
}

func TestRenderDeterministic(t *testing.T) {
	for _, tc := range goldenCases() {
		audio := testAudio(int(tc.m.Size))
		a := render(t, um.RenderEmail(tc.m, tc.opts), audio)
		// The same message as a store may hand it back: another time zone,
		// a copied keyword slice, other flags.
		m := tc.m.Clone()
		m.Time = m.Time.In(time.FixedZone("X", -7*3600))
		m.Flags = um.FlagHeard | um.FlagDeleted
		m.Keywords = []string{"$Label1"}
		b := render(t, um.RenderEmail(m, tc.opts), audio)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two renders differ:\n%s\n---\n%s", tc.name, a, b)
		}
	}
	other := testMessage(10)
	other.ID = uuid.MustParse("11111111-2222-4333-8444-555555555555")
	a := render(t, um.RenderEmail(testMessage(10), um.RenderOptions{}), testAudio(10))
	b := render(t, um.RenderEmail(other, um.RenderOptions{}), testAudio(10))
	if bytes.Equal(a, b) {
		t.Errorf("messages with different IDs render the same bytes")
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

var audioSizes = []int{0, 1, 2, 3, 56, 57, 58, 113, 114, 115, 1000, 57 * 1024, 57*1024 + 1, 1 << 20}

func TestRenderSizeAndStructure(t *testing.T) {
	for _, size := range audioSizes {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			m := testMessage(size)
			m.Transcript = "Grüße aus Köln."
			audio := testAudio(size)
			e := um.RenderEmail(m, um.RenderOptions{Mailbox: "1001"})
			msg := render(t, e, audio)
			if got := e.Size(); got != int64(len(msg)) {
				t.Errorf("Size() = %d, want %d", got, len(msg))
			}
			if got, want := e.Lines(), int64(bytes.Count(msg, []byte("\n"))); got != want {
				t.Errorf("Lines() = %d, want %d", got, want)
			}
			if !bytes.HasPrefix(msg, e.Header()) || !bytes.HasSuffix(e.Header(), []byte("\r\n\r\n")) {
				t.Errorf("Header() is not the message's header block: %q", e.Header())
			}
			checkStructure(t, e.Structure(), msg, audio)
			checkWellFormed(t, msg)
		})
	}
}

// checkStructure compares the structure with what go-message parses from
// msg, and the decoded attachment with audio.
func checkStructure(t *testing.T, root *um.MIMEPart, msg, audio []byte) {
	t.Helper()
	if root == nil {
		t.Fatal("Structure() = nil")
	}
	br := bufio.NewReader(bytes.NewReader(msg))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	if root.HeaderStart != 0 || root.End != int64(len(msg)) {
		t.Errorf("root spans [%d, %d), want [0, %d)", root.HeaderStart, root.End, len(msg))
	}
	if want := int64(bytes.Index(msg, []byte("\r\n\r\n")) + 4); root.BodyStart != want {
		t.Errorf("root BodyStart = %d, want %d", root.BodyStart, want)
	}
	checkPartHeader(t, "root", root, h)
	if root.Size != root.End-root.BodyStart {
		t.Errorf("root Size = %d, want %d", root.Size, root.End-root.BodyStart)
	}

	mr := textproto.NewMultipartReader(bytes.NewReader(msg[root.BodyStart:]), root.Params["boundary"])
	for i, want := range root.Children {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", i+1, err)
		}
		body, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("part %d: %v", i+1, err)
		}
		name := fmt.Sprintf("part %d", i+1)
		checkPartHeader(t, name, want, p.Header)
		if want.Size != int64(len(body)) || want.End-want.BodyStart != want.Size {
			t.Errorf("%s: Size = %d, span %d, go-message reads %d", name, want.Size, want.End-want.BodyStart, len(body))
		}
		if !bytes.Equal(msg[want.BodyStart:want.End], body) {
			t.Errorf("%s: bytes at [BodyStart, End) are not the body go-message reads", name)
		}
		ph, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(msg[want.HeaderStart:want.BodyStart])))
		if err != nil || ph.Get("Content-Type") != p.Header.Get("Content-Type") {
			t.Errorf("%s: bytes at [HeaderStart, BodyStart) are not its header (%v)", name, err)
		}
		if !bytes.HasSuffix(msg[want.HeaderStart:want.BodyStart], []byte("\r\n\r\n")) {
			t.Errorf("%s: header does not end with a blank line", name)
		}
		if want.Type == "text" {
			if got := int64(bytes.Count(body, []byte("\n"))); want.Lines != got {
				t.Errorf("%s: Lines = %d, want %d", name, want.Lines, got)
			}
		}
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Errorf("after %d parts: NextPart() error = %v, want io.EOF", len(root.Children), err)
	}

	mrd, err := mail.CreateReader(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		p, err := mrd.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ah, ok := p.Header.(*mail.AttachmentHeader); ok {
			if got, err = io.ReadAll(p.Body); err != nil {
				t.Fatal(err)
			}
			fn, err := ah.Filename()
			if err != nil || fn != root.Children[1].DispositionParams["filename"] {
				t.Errorf("attachment Filename() = %q, %v, want %q", fn, err, root.Children[1].DispositionParams["filename"])
			}
		}
	}
	if !bytes.Equal(got, audio) {
		t.Errorf("decoded attachment is %d bytes and differs from the %d bytes of audio", len(got), len(audio))
	}
}

func checkPartHeader(t *testing.T, name string, p *um.MIMEPart, h textproto.Header) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		t.Fatalf("%s: Content-Type: %v", name, err)
	}
	if mt != p.Type+"/"+p.Subtype {
		t.Errorf("%s: type %s/%s, header says %s", name, p.Type, p.Subtype, mt)
	}
	if fmt.Sprint(params) != fmt.Sprint(p.Params) {
		t.Errorf("%s: Params = %v, header says %v", name, p.Params, params)
	}
	if got := h.Get("Content-Transfer-Encoding"); got != p.Encoding {
		t.Errorf("%s: Encoding = %q, header says %q", name, p.Encoding, got)
	}
	disp, dparams, _ := mime.ParseMediaType(h.Get("Content-Disposition"))
	if disp != p.Disposition || fmt.Sprint(dparams) != fmt.Sprint(p.DispositionParams) && p.Disposition != "" {
		t.Errorf("%s: Disposition = %q %v, header says %q %v", name, p.Disposition, p.DispositionParams, disp, dparams)
	}
}

func TestRenderHeaders(t *testing.T) {
	m := testMessage(10)
	m.CallerName = "Jürgen Müller, \"Jr.\""
	m.Urgent = true
	m.Duration = 61*time.Second + 600*time.Millisecond
	msg := render(t, um.RenderEmail(m, um.RenderOptions{Domain: "pbx.example.com", Mailbox: "1001"}), testAudio(10))
	r, err := mail.CreateReader(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	h := r.Header
	from, err := h.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Name != m.CallerName || from[0].Address != "+4930123@pbx.example.com" {
		t.Errorf("From = %v, %v, want %q <+4930123@pbx.example.com>", from, err, m.CallerName)
	}
	to, err := h.AddressList("To")
	if err != nil || len(to) != 1 || to[0].Address != "1001@pbx.example.com" {
		t.Errorf("To = %v, %v, want 1001@pbx.example.com", to, err)
	}
	if got, err := h.Subject(); got != "Voice message from Jürgen Müller, \"Jr.\" (+4930123), 1:02" {
		t.Errorf("Subject() = %q, %v", got, err)
	}
	if got, err := h.MessageID(); got != m.ID.String()+"@pbx.example.com" {
		t.Errorf("MessageID() = %q, %v", got, err)
	}
	if got, err := h.Date(); !got.Equal(m.Time) {
		t.Errorf("Date() = %v, %v, want %v", got, err, m.Time)
	}
	if got, err := h.Text("X-VoiceMessageSenderName"); got != m.CallerName {
		t.Errorf("X-VoiceMessageSenderName = %q, %v, want %q", got, err, m.CallerName)
	}
	for k, want := range map[string]string{
		"Message-Context":          "voice-message",
		"Content-Duration":         "62",
		"X-VoiceMessageDuration":   "62",
		"X-CallingTelephoneNumber": "+4930123",
		"Importance":               "high",
		"X-Priority":               "1",
		"X-Um-Message-Id":          m.ID.String(),
		"MIME-Version":             "1.0",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}

	m.Urgent = false
	plain := render(t, um.RenderEmail(m, um.RenderOptions{}), testAudio(10))
	if bytes.Contains(plain, []byte("Importance:")) || bytes.Contains(plain, []byte("X-Priority:")) {
		t.Errorf("a message that is not urgent has Importance or X-Priority:\n%s", plain)
	}
}

func TestRenderDuration(t *testing.T) {
	for _, tc := range []struct {
		d      time.Duration
		length string
		secs   string
	}{
		{-time.Second, "0:00", "0"},
		{0, "0:00", "0"},
		{499 * time.Millisecond, "0:00", "0"},
		{500 * time.Millisecond, "0:01", "1"},
		{59600 * time.Millisecond, "1:00", "60"},
		{3725 * time.Second, "1:02:05", "3725"},
	} {
		m := testMessage(0)
		m.Duration = tc.d
		r, err := mail.CreateReader(bytes.NewReader(render(t, um.RenderEmail(m, um.RenderOptions{}), nil)))
		if err != nil {
			t.Fatal(err)
		}
		subj, _ := r.Header.Subject()
		if !strings.HasSuffix(subj, ", "+tc.length) || r.Header.Get("Content-Duration") != tc.secs || r.Header.Get("X-VoiceMessageDuration") != tc.secs {
			t.Errorf("duration %v: Subject = %q, Content-Duration = %q, X-VoiceMessageDuration = %q; want %s and %s seconds",
				tc.d, subj, r.Header.Get("Content-Duration"), r.Header.Get("X-VoiceMessageDuration"), tc.length, tc.secs)
		}
	}
}

func TestRenderNonASCIITo(t *testing.T) {
	msg := render(t, um.RenderEmail(testMessage(1), um.RenderOptions{To: "Jörg Groß <joerg@example.com>, bob@example.com"}), testAudio(1))
	checkWellFormed(t, msg)
	r, err := mail.CreateReader(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	to, err := r.Header.AddressList("To")
	if err != nil || len(to) != 2 || to[0].Name != "Jörg Groß" || to[0].Address != "joerg@example.com" || to[1].Address != "bob@example.com" {
		t.Errorf("To = %v, %v; want Jörg Groß <joerg@example.com>, bob@example.com", to, err)
	}
}

func TestRenderHostileFields(t *testing.T) {
	m := testMessage(5)
	m.CallerName = "Mallory\r\nBcc: victim@example.com\x00"
	m.CallerNumber = "123\r\nX-Evil: 1"
	m.Transcript = "line\r\n--=_um_0b1c2d3e4f504617828394a5b6c7d8e9--\r\nafter"
	m.AudioType = "not a type"
	e := um.RenderEmail(m, um.RenderOptions{To: "a@example.com\r\nBcc: b@example.com", Domain: "x.example\r\nBcc: c@example.com"})
	msg := render(t, e, testAudio(5))
	for _, bad := range []string{"\r\nBcc:", "\r\nX-Evil:", "\x00"} {
		if bytes.Contains(msg, []byte(bad)) {
			t.Errorf("message contains %q:\n%s", bad, msg)
		}
	}
	if got := e.Structure().Children[1]; got.Type+"/"+got.Subtype != "application/octet-stream" {
		t.Errorf("unparsable audio type rendered as %s/%s, want application/octet-stream", got.Type, got.Subtype)
	}
	checkStructure(t, e.Structure(), msg, testAudio(5))
	checkWellFormed(t, msg)
}

func TestRenderReadsNoAudio(t *testing.T) {
	m := testMessage(1 << 20)
	e := um.RenderEmail(m, um.RenderOptions{})
	c := &countingReader{r: bytes.NewReader(testAudio(1 << 20))}
	_ = e.Size()
	_ = e.Lines()
	root := e.Structure()
	h, err := e.ReadHeader(c)
	if err != nil || !bytes.Equal(h, e.Header()) {
		t.Errorf("ReadHeader() = %q, %v, want Header()", h, err)
	}
	// The header and the text part come without the audio too.
	text := root.Children[0]
	got, err := io.ReadAll(e.Range(c, 0, text.End))
	if err != nil || int64(len(got)) != text.End {
		t.Errorf("Range(0, %d) read %d bytes, %v", text.End, len(got), err)
	}
	if c.n != 0 {
		t.Errorf("Size, Lines, Structure, ReadHeader and Range before the audio read %d audio bytes, want 0", c.n)
	}
	if _, err := e.WriteTo(io.Discard, c); err != nil {
		t.Fatal(err)
	}
	if c.n != 1<<20 {
		t.Errorf("WriteTo read %d audio bytes, want %d", c.n, 1<<20)
	}
}

func TestRenderWrongContentSize(t *testing.T) {
	for _, tc := range []struct {
		name  string
		raw   bool
		audio int
	}{
		{"shorter", false, 999},
		{"longer", false, 1001},
		{"empty", false, 0},
		{"raw shorter", true, 999},
		{"raw longer", true, 1001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMessage(1000)
			m.Raw = tc.raw
			e := um.RenderEmail(m, um.RenderOptions{})
			_, err := e.WriteTo(io.Discard, bytes.NewReader(testAudio(tc.audio)))
			if !errors.Is(err, um.ErrContentSize) {
				t.Errorf("WriteTo() error = %v, want ErrContentSize", err)
			}
			if tc.audio < 1000 && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("WriteTo() error = %v, want io.ErrUnexpectedEOF too", err)
			}
			if _, err := io.ReadAll(e.Reader(bytes.NewReader(testAudio(tc.audio)))); !errors.Is(err, um.ErrContentSize) {
				t.Errorf("Reader: ReadAll() error = %v, want ErrContentSize", err)
			}
		})
	}
	readErr := errors.New("disk on fire")
	e := um.RenderEmail(testMessage(1000), um.RenderOptions{})
	_, err := e.WriteTo(io.Discard, io.MultiReader(bytes.NewReader(testAudio(10)), errReader{readErr}))
	if !errors.Is(err, readErr) {
		t.Errorf("WriteTo() with a failing reader: error = %v, want it wrapped", err)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// onlyReader hides every method but Read, so Range cannot seek.
type onlyReader struct{ io.Reader }

func TestRenderRange(t *testing.T) {
	const size = 5000
	audio := testAudio(size)
	e := um.RenderEmail(testMessage(size), um.RenderOptions{})
	whole := render(t, e, audio)
	a := e.Structure().Children[1]
	offs := []int64{0, 1, a.HeaderStart, a.BodyStart - 1, a.BodyStart, a.BodyStart + 1, a.BodyStart + 75, a.BodyStart + 76,
		a.BodyStart + 77, a.BodyStart + 78, a.BodyStart + 79, a.BodyStart + 78*10 + 5, a.End - 1, a.End, a.End + 1, e.Size() - 1, e.Size(), e.Size() + 10}
	lens := []int64{-1, 0, 1, 2, 77, 78, 79, 500, 1 << 20}
	for _, off := range offs {
		for _, n := range lens {
			lo := min(off, int64(len(whole)))
			hi := int64(len(whole))
			if n >= 0 {
				hi = min(lo+n, hi)
			}
			want := whole[lo:hi]
			for _, seek := range []bool{true, false} {
				var content io.Reader = bytes.NewReader(audio)
				if !seek {
					content = onlyReader{content}
				}
				got, err := io.ReadAll(e.Range(content, off, n))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("Range(seek %v, %d, %d) = %d bytes, %v; want %d bytes", seek, off, n, len(got), err, len(want))
				}
			}
		}
	}
	// BODY[2] of the audio part, from its offsets.
	got, err := io.ReadAll(e.Range(bytes.NewReader(audio), a.BodyStart, a.Size))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(got), "\r\n", ""))
	if err != nil || !bytes.Equal(dec, audio) {
		t.Errorf("BODY[2] decodes to %d bytes, %v; want the audio", len(dec), err)
	}
}

func TestRenderRaw(t *testing.T) {
	raw := []byte("From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n\r\nmore\r\n")
	m := um.Message{ID: uuid.New(), Folder: "Work", Raw: true, Size: int64(len(raw))}
	e := um.RenderEmail(m, um.RenderOptions{})
	if e.Size() != int64(len(raw)) || e.Structure() != nil || e.Header() != nil || e.Lines() != -1 {
		t.Errorf("raw: Size() = %d, Structure() = %v, Header() = %q, Lines() = %d; want %d, nil, nil, -1",
			e.Size(), e.Structure(), e.Header(), e.Lines(), len(raw))
	}
	if got := render(t, e, raw); !bytes.Equal(got, raw) {
		t.Errorf("raw WriteTo = %q, want %q", got, raw)
	}
	h, err := e.ReadHeader(bytes.NewReader(raw))
	if want := "From: a@example.com\r\nSubject: hi\r\n\r\n"; string(h) != want || err != nil {
		t.Errorf("ReadHeader() = %q, %v, want %q", h, err, want)
	}
	long := append([]byte("X-Long: "+strings.Repeat("x", 5000)+"\r\n\n"), "tail"...)
	e2 := um.RenderEmail(um.Message{ID: m.ID, Raw: true, Size: int64(len(long))}, um.RenderOptions{})
	if h, err := e2.ReadHeader(bytes.NewReader(long)); string(h) != string(long[:len(long)-4]) || err != nil {
		t.Errorf("ReadHeader() of a long line = %d bytes, %v, want %d", len(h), err, len(long)-4)
	}
	noBody := []byte("Subject: only header\r\n")
	e3 := um.RenderEmail(um.Message{ID: m.ID, Raw: true, Size: int64(len(noBody))}, um.RenderOptions{})
	if h, err := e3.ReadHeader(bytes.NewReader(noBody)); !bytes.Equal(h, noBody) || err != nil {
		t.Errorf("ReadHeader() without a body = %q, %v, want all of it", h, err)
	}
	for _, r := range [][2]int64{{0, 5}, {5, 10}, {20, -1}, {int64(len(raw)), 3}} {
		got, err := io.ReadAll(e.Range(onlyReader{bytes.NewReader(raw)}, r[0], r[1]))
		hi := int64(len(raw))
		if r[1] >= 0 {
			hi = min(r[0]+r[1], hi)
		}
		if err != nil || !bytes.Equal(got, raw[r[0]:hi]) {
			t.Errorf("raw Range(%d, %d) = %q, %v, want %q", r[0], r[1], got, err, raw[r[0]:hi])
		}
	}
}

func ExampleRenderEmail() {
	m := um.Message{
		ID:           uuid.MustParse("0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9"),
		CallerNumber: "+4930123",
		CallerName:   "Alice Example",
		Time:         time.Date(2024, 1, 2, 15, 4, 5, 0, time.UTC),
		Duration:     42 * time.Second,
		AudioType:    "audio/wav",
		Size:         48000,
	}
	e := um.RenderEmail(m, um.RenderOptions{Domain: "pbx.example.com", Mailbox: "1001"})
	fmt.Println("size:", e.Size())
	fmt.Print(strings.ReplaceAll(string(e.Header()), "\r\n", "\n"))
	audio := e.Structure().Children[1]
	fmt.Println("section 2:", audio.Type+"/"+audio.Subtype, audio.DispositionParams["filename"], audio.Size, "octets")
	// Output:
	// size: 66815
	// Date: Tue, 02 Jan 2024 15:04:05 +0000
	// From: "Alice Example" <+4930123@pbx.example.com>
	// To: <1001@pbx.example.com>
	// Subject: Voice message from Alice Example (+4930123), 0:42
	// Message-ID: <0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9@pbx.example.com>
	// MIME-Version: 1.0
	// Content-Type: multipart/mixed;
	//  boundary="=_um_0b1c2d3e4f504617828394a5b6c7d8e9"
	// Message-Context: voice-message
	// Content-Duration: 42
	// X-CallingTelephoneNumber: +4930123
	// X-VoiceMessageDuration: 42
	// X-VoiceMessageSenderName: Alice Example
	// X-Um-Message-Id: 0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9
	//
	// section 2: audio/wav voicemail-20240102-150405-4930123-0b1c2d3e.wav 65686 octets
}

func BenchmarkRenderHeader(b *testing.B) {
	m := testMessage(1 << 20)
	m.Transcript = "Hallo, hier ist Jürgen. Bitte ruf zurück."
	b.ReportAllocs()
	for b.Loop() {
		e := um.RenderEmail(m, um.RenderOptions{Mailbox: "1001"})
		if len(e.Header()) == 0 || e.Size() == 0 || e.Structure() == nil {
			b.Fatal("empty render")
		}
	}
}

func BenchmarkWriteTo(b *testing.B) {
	audio := testAudio(1 << 20)
	e := um.RenderEmail(testMessage(len(audio)), um.RenderOptions{Mailbox: "1001"})
	b.SetBytes(e.Size())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.WriteTo(io.Discard, bytes.NewReader(audio)); err != nil {
			b.Fatal(err)
		}
	}
}
