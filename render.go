package um

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net/mail"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// DefaultDomain is the mail domain RenderOptions uses when Domain is empty.
// The .invalid top-level domain (RFC 2606) never resolves, so replies to a
// caller's address bounce at once instead of reaching a stranger.
const DefaultDomain = "voicemail.invalid"

// RenderOptions tune how a voicemail looks as an e-mail. The zero value
// works. Rendering is deterministic for fixed options: keep them fixed for
// a mailbox, or sizes and structures that IMAP clients cached go stale.
type RenderOptions struct {
	// Domain is the host part of the From address (caller number as local
	// part) and of the Message-ID. Default DefaultDomain.
	Domain string
	// To is the To header's value, an RFC 5322 address list such as
	// `"Bob" <bob@example.com>`; non-ASCII display names are encoded as
	// RFC 2047 requires. When empty and Mailbox is
	// set, To is <Mailbox@Domain>; when both are empty, the message is
	// addressed to "undisclosed-recipients:;".
	To string
	// Mailbox is the voice mailbox the message belongs to, for the default
	// To address.
	Mailbox string
	// Location is the time zone of the Date header, the text part and the
	// attachment's file name. Default UTC, so the bytes do not depend on
	// the zone a store hands times back in.
	Location *time.Location
	// Texts is the wording of the Subject and the text part, one language's
	// templates (NewTexts). Default EnglishTexts.
	Texts *Texts
}

// Email is a voicemail rendered as an e-mail, or an e-mail a mail client
// appended (a Raw message), passed through unchanged.
//
// Everything but the content is computed when the Email is made: Size,
// Header, Structure and Lines never read the audio. Only WriteTo and
// Reader, which produce the message bytes, read the content, exactly
// Message.Size bytes of it.
//
// The methods do not modify the Email, so one Email may serve concurrent
// readers; slices and parts it returns must not be modified.
type Email struct {
	raw  bool
	id   string // the message ID, for errors
	size int64  // content bytes: audio, or the whole Raw message

	pre     []byte // header, text part, audio part header
	headLen int    // top-level header block in pre, blank line included
	suf     []byte // after the encoded audio: the close delimiter
	root    *MIMEPart
	lines   int64
}

// MIMEPart is one part of a rendered voicemail with what an IMAP
// BODYSTRUCTURE needs, and where the part lies in the message bytes. The
// root part is the whole message (multipart/mixed); its Children are the
// text part (IMAP section 1) and the audio (section 2).
//
// Offsets count bytes from the start of the message: a part's MIME header
// (IMAP BODY[n.MIME]) is [HeaderStart, BodyStart), its body (BODY[n]) is
// [BodyStart, End). For the root, [0, BodyStart) is BODY[HEADER] and
// [BodyStart, End) is BODY[TEXT]. Email.Range serves any such slice.
type MIMEPart struct {
	Type, Subtype string            // lower case, e.g. "audio", "wav"
	Params        map[string]string // Content-Type parameters: charset, boundary, name
	ID            string            // Content-ID; empty
	Description   string            // Content-Description; empty
	// Encoding is the Content-Transfer-Encoding: "7bit",
	// "quoted-printable" or "base64"; empty for the multipart.
	Encoding string
	// Size is the body's length in octets as encoded, which IMAP reports.
	Size int64
	// Lines is the number of lines of the body, which IMAP reports for
	// text parts. Every line of a rendered body ends with CRLF.
	Lines int64
	// Disposition is the Content-Disposition value ("attachment") with
	// DispositionParams (filename); empty when the part has none.
	Disposition       string
	DispositionParams map[string]string
	Language          []string // Content-Language; none
	Location          string   // Content-Location; none
	Children          []*MIMEPart

	HeaderStart, BodyStart, End int64
}

// RenderEmail renders m as an e-mail without reading its content. For a Raw
// message the result passes the content through: Size is m.Size, and the
// header and structure must be read from the content (ReadHeader; Structure
// returns nil).
func RenderEmail(m Message, opts RenderOptions) *Email {
	e := &Email{raw: m.Raw, id: m.ID.String(), size: max(m.Size, 0)}
	if m.Raw {
		e.lines = -1
		return e
	}
	opts.Domain = strings.Map(func(r rune) rune {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`<>()@,;:"\`, r) {
			return -1 // keeps a misconfigured domain from breaking the addresses
		}
		return r
	}, opts.Domain)
	if opts.Domain == "" {
		opts.Domain = DefaultDomain
	}
	if opts.Location == nil {
		opts.Location = time.UTC
	}
	c := newCaller(m)
	secs := durationSeconds(m.Duration)
	length := formatLength(secs)
	when := m.Time.In(opts.Location)
	boundary := "=_um_" + strings.ReplaceAll(e.id, "-", "")

	var b bytes.Buffer
	b.Grow(2048)
	field := func(name, value string) { writeField(&b, name, value) }
	field("Date", when.Format(time.RFC1123Z))
	field("From", c.from(opts.Domain))
	switch {
	case opts.To != "":
		field("To", addressList(opts.To))
	case opts.Mailbox != "":
		field("To", "<"+localPart(opts.Mailbox, "mailbox")+"@"+opts.Domain+">")
	default:
		field("To", "undisclosed-recipients:;")
	}
	subject, body, lang := opts.Texts.texts(TextData{
		CallerName: c.name, CallerNumber: c.number, Time: when, Length: length, Seconds: secs, Urgent: m.Urgent,
		Transcript: strings.ReplaceAll(strings.ReplaceAll(strings.TrimSpace(m.Transcript), "\r\n", "\n"), "\r", "\n"),
	})
	field("Subject", encodeSubject(subject))
	field("Message-ID", "<"+e.id+"@"+opts.Domain+">")
	field("MIME-Version", "1.0")
	field("Content-Type", mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": boundary}))
	field("Message-Context", "voice-message")
	field("Content-Duration", strconv.FormatInt(secs, 10))
	if m.Urgent {
		field("Importance", "high")
		field("X-Priority", "1")
	}
	if c.number != "" {
		field("X-CallingTelephoneNumber", unstructured(c.number))
	}
	field("X-VoiceMessageDuration", strconv.FormatInt(secs, 10))
	if c.name != "" || c.number != "" {
		field("X-VoiceMessageSenderName", unstructured(c.display()))
	}
	field("X-Um-Message-Id", e.id)
	b.WriteString("\r\n")
	e.headLen = b.Len()

	text, enc := textBody(body, boundary)
	b.WriteString("--" + boundary + "\r\n")
	textStart := b.Len()
	field("Content-Type", "text/plain; charset=utf-8")
	field("Content-Transfer-Encoding", enc)
	var langs []string
	if lang != "" {
		field("Content-Language", lang)
		langs = []string{lang}
	}
	b.WriteString("\r\n")
	textBodyStart := b.Len()
	b.Write(text)
	textEnd := b.Len()

	ctype, cparams := audioType(m.AudioType)
	// The ID's first eight hex digits make the name differ per message:
	// ten messages from one caller in one second are ten files.
	filename := "voicemail-" + when.Format("20060102-150405") + "-" + localPart(strings.TrimLeft(c.number, "+"), "unknown") +
		"-" + strings.ReplaceAll(e.id, "-", "")[:8] + audioExt(ctype)
	cparams["name"] = filename
	b.WriteString("\r\n--" + boundary + "\r\n")
	audioStart := b.Len()
	field("Content-Type", mime.FormatMediaType(ctype, cparams))
	field("Content-Transfer-Encoding", "base64")
	disp := map[string]string{"filename": filename}
	field("Content-Disposition", mime.FormatMediaType("attachment", disp))
	field("Content-Duration", strconv.FormatInt(secs, 10))
	b.WriteString("\r\n")
	e.pre = b.Bytes()
	e.suf = []byte("\r\n--" + boundary + "--\r\n")

	encLen, encLines := base64Size(e.size)
	audioBodyStart := int64(len(e.pre))
	audioEnd := audioBodyStart + encLen
	total := audioEnd + int64(len(e.suf))
	e.lines = int64(bytes.Count(e.pre, []byte("\n"))) + encLines + int64(bytes.Count(e.suf, []byte("\n")))

	typ, sub, _ := strings.Cut(ctype, "/")
	e.root = &MIMEPart{
		Type: "multipart", Subtype: "mixed", Params: map[string]string{"boundary": boundary},
		Size: total - int64(e.headLen), Lines: e.lines - int64(bytes.Count(e.pre[:e.headLen], []byte("\n"))),
		HeaderStart: 0, BodyStart: int64(e.headLen), End: total,
		Children: []*MIMEPart{{
			Type: "text", Subtype: "plain", Params: map[string]string{"charset": "utf-8"},
			Encoding: enc, Size: int64(len(text)), Lines: int64(bytes.Count(text, []byte("\n"))), Language: langs,
			HeaderStart: int64(textStart), BodyStart: int64(textBodyStart), End: int64(textEnd),
		}, {
			Type: typ, Subtype: sub, Params: cparams,
			Encoding: "base64", Size: encLen, Lines: encLines,
			Disposition: "attachment", DispositionParams: disp,
			HeaderStart: int64(audioStart), BodyStart: audioBodyStart, End: audioEnd,
		}},
	}
	return e
}

// Size returns the exact length of the message in bytes.
func (e *Email) Size() int64 {
	if e.raw {
		return e.size
	}
	return e.root.End
}

// Header returns the top-level header block, the blank line that ends it
// included (IMAP BODY[HEADER]). It is nil for a Raw message, whose header is
// in its content: use ReadHeader.
func (e *Email) Header() []byte {
	if e.raw {
		return nil
	}
	return e.pre[:e.headLen:e.headLen]
}

// ReadHeader returns the top-level header block, the blank line that ends
// it included. For a voicemail it is Header and content is not read (it may
// be nil). For a Raw message it reads content up to the first empty line;
// content without one is all header.
func (e *Email) ReadHeader(content io.Reader) ([]byte, error) {
	if !e.raw {
		return e.Header(), nil
	}
	br := bufio.NewReader(io.LimitReader(content, e.size))
	var h []byte
	lineStart := 0
	for {
		frag, err := br.ReadSlice('\n')
		h = append(h, frag...)
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF:
			return h, nil
		case err != nil:
			return nil, fmt.Errorf("um: read header of message %s: %w", e.id, err)
		}
		if line := h[lineStart:]; len(line) == 1 || (len(line) == 2 && line[0] == '\r') {
			return h, nil
		}
		lineStart = len(h)
	}
}

// Structure returns the MIME structure of a voicemail: what IMAP
// BODYSTRUCTURE reports and where each part lies. It returns nil for a Raw
// message; its structure is in its content, which the caller must parse.
func (e *Email) Structure() *MIMEPart { return e.root }

// Lines returns the number of lines of the whole message, or -1 for a Raw
// message.
func (e *Email) Lines() int64 { return e.lines }

// WriteTo writes the whole message to w, reading exactly Message.Size bytes
// of content (the audio, or the whole Raw message). Content of another
// length gives an error wrapping ErrContentSize.
func (e *Email) WriteTo(w io.Writer, content io.Reader) (int64, error) {
	return io.Copy(w, e.Range(content, 0, -1))
}

// Reader returns the whole message as a stream that reads content as it
// goes, without holding more than a small buffer of it. A content of the
// wrong length makes Read fail with an error wrapping ErrContentSize.
func (e *Email) Reader(content io.Reader) io.Reader { return e.Range(content, 0, -1) }

// Range returns the n bytes of the message starting at offset off (all
// bytes from off when n < 0), as for an IMAP partial fetch such as
// BODY[2]<0.1024> or one section found with Structure. It reads the content
// only when the range needs it, and skips content before the range by
// seeking when content is an io.Seeker, so serving a slice of the audio
// encodes only that slice. The range is clipped to the message. Content of
// the wrong length gives an error wrapping ErrContentSize, though a range
// that ends before the content does cannot notice a longer content.
func (e *Email) Range(content io.Reader, off, n int64) io.Reader {
	size := e.Size()
	off = min(max(off, 0), size)
	if n < 0 || n > size-off {
		n = size - off
	}
	if content == nil {
		content = bytes.NewReader(nil)
	}
	if e.raw {
		src := &exactReader{src: content, id: e.id, left: e.size - off, size: e.size, skip: off}
		if off+n == size {
			return src // reads to the end, so it checks for surplus content
		}
		return &rangeReader{src: src, left: n}
	}
	pre, suf := int64(len(e.pre)), int64(len(e.suf))
	audioStart, audioEnd := pre, e.root.End-suf
	var parts []io.Reader
	if off < pre {
		parts = append(parts, bytes.NewReader(e.pre[off:]))
	}
	if off < audioEnd && off+n > audioStart {
		rel := max(off-audioStart, 0) // offset within the encoded audio
		line := rel / 78
		enc := &b64Reader{src: &exactReader{src: content, id: e.id, left: e.size - min(line*57, e.size), size: e.size, skip: line * 57}}
		enc.drop = rel - line*78
		parts = append(parts, enc)
	}
	parts = append(parts, bytes.NewReader(e.suf[max(off-audioEnd, 0):]))
	return &rangeReader{src: io.MultiReader(parts...), left: n}
}

// rangeReader yields at most left bytes of src.
type rangeReader struct {
	src  io.Reader
	left int64
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.left)]
	n, err := r.src.Read(p)
	r.left -= int64(n)
	if err == io.EOF && r.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (r *rangeReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if r.left <= 0 {
		return 0, nil
	}
	buf := make([]byte, min(r.left, 64<<10))
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// exactReader passes on content after skipping skip bytes and fails when
// the content is not size bytes long. It checks for surplus content once
// left reaches zero and a further Read comes.
type exactReader struct {
	src        io.Reader
	id         string
	left, size int64
	skip       int64
}

func (r *exactReader) Read(p []byte) (int, error) {
	if r.skip > 0 {
		if err := r.doSkip(); err != nil {
			return 0, err
		}
	}
	if r.left == 0 {
		var one [1]byte
		n, err := io.ReadFull(r.src, one[:])
		if n > 0 {
			return 0, fmt.Errorf("um: content of message %s is longer than its size %d: %w", r.id, r.size, ErrContentSize)
		}
		if err != io.EOF {
			return 0, fmt.Errorf("um: read content of message %s: %w", r.id, err)
		}
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.left)]
	n, err := r.src.Read(p)
	r.left -= int64(n)
	if err == io.EOF {
		if r.left > 0 {
			return n, r.short()
		}
		err = nil
	} else if err != nil {
		err = fmt.Errorf("um: read content of message %s: %w", r.id, err)
	}
	return n, err
}

func (r *exactReader) doSkip() error {
	skip := r.skip
	r.skip = 0
	if s, ok := r.src.(io.Seeker); ok {
		cur, err := s.Seek(0, io.SeekCurrent)
		if err == nil {
			end, err := s.Seek(0, io.SeekEnd)
			if err == nil && end-cur < skip {
				return r.short()
			}
			if err == nil {
				_, err = s.Seek(cur+skip, io.SeekStart)
			}
		}
		if err != nil {
			return fmt.Errorf("um: seek in content of message %s: %w", r.id, err)
		}
		return nil
	}
	n, err := io.CopyN(io.Discard, r.src, skip)
	if err == io.EOF || (err == nil && n < skip) {
		return r.short()
	}
	if err != nil {
		return fmt.Errorf("um: read content of message %s: %w", r.id, err)
	}
	return nil
}

func (r *exactReader) short() error {
	return fmt.Errorf("um: content of message %s is shorter than its size %d: %w: %w", r.id, r.size, ErrContentSize, io.ErrUnexpectedEOF)
}

// b64Reader encodes its source as base64 in CRLF-terminated lines of 76
// characters, dropping the first drop output bytes.
type b64Reader struct {
	src  io.Reader
	in   []byte
	out  []byte
	pos  int
	drop int64
	err  error
}

const b64Chunk = 57 * 1024 // whole lines of input: 57 bytes make 76 characters

func (r *b64Reader) Read(p []byte) (int, error) {
	for r.pos == len(r.out) {
		if r.err != nil {
			return 0, r.err
		}
		r.fill()
	}
	n := copy(p, r.out[r.pos:])
	r.pos += n
	return n, nil
}

func (r *b64Reader) fill() {
	if r.in == nil {
		r.in = make([]byte, b64Chunk)
		r.out = make([]byte, 0, b64Chunk/57*78)
	}
	// The source is an exactReader: EOF comes only after all the content
	// and the check for surplus.
	n, err := io.ReadFull(r.src, r.in)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	r.out, r.pos = r.out[:0], 0
	for i := 0; i < n; i += 57 {
		r.out = base64.StdEncoding.AppendEncode(r.out, r.in[i:min(i+57, n)])
		r.out = append(r.out, '\r', '\n')
	}
	if r.drop > 0 {
		d := min(r.drop, int64(len(r.out)))
		r.pos, r.drop = int(d), r.drop-d
	}
	r.err = err
}

// base64Size returns the length and line count of n bytes encoded by
// b64Reader.
func base64Size(n int64) (size, lines int64) {
	chars := (n + 2) / 3 * 4
	lines = (chars + 75) / 76
	return chars + 2*lines, lines
}

// caller is the cleaned caller identity.
type caller struct{ name, number string }

func newCaller(m Message) caller {
	return caller{name: truncate(oneLine(m.CallerName), 100), number: truncate(oneLine(m.CallerNumber), 64)}
}

// display is how the caller is named: the name, else the number.
func (c caller) display() string {
	if c.name != "" {
		return c.name
	}
	if c.number != "" {
		return c.number
	}
	return "unknown caller"
}

func (c caller) from(domain string) string {
	name := c.display()
	if c.name == "" && c.number == "" {
		name = "Unknown caller"
	}
	return phrase(name) + " <" + localPart(c.number, "unknown") + "@" + domain + ">"
}

// textBody encodes the text part's body, whose lines end in \n, with CRLF
// line ends: as 7bit when it can go so, else quoted-printable.
func textBody(s, boundary string) ([]byte, string) {
	body := strings.ReplaceAll(s, "\n", "\r\n")
	if plain7bit(body) && !strings.Contains(body, boundary) {
		return []byte(body), "7bit"
	}
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(body))
	w.Close()
	// The body ends with a line break, which the encoder keeps.
	return b.Bytes(), "quoted-printable"
}

// plain7bit reports whether s may go as 7bit: printable ASCII lines of at
// most 998 characters.
func plain7bit(s string) bool {
	for line := range strings.SplitSeq(s, "\r\n") {
		if len(line) > 998 {
			return false
		}
		for i := 0; i < len(line); i++ {
			if c := line[i]; (c < 0x20 && c != '\t') || c > 0x7e {
				return false
			}
		}
	}
	return true
}

// writeField writes a header field, folding it at spaces so lines stay
// within 78 characters where the words allow.
func writeField(b *bytes.Buffer, name, value string) {
	b.WriteString(name)
	b.WriteByte(':')
	n := len(name) + 1
	for i, word := range strings.Split(value, " ") {
		if word != "" && n+1+len(word) > 78 && (i > 0 || len(word) <= 77) {
			b.WriteString("\r\n")
			n = 0
		}
		b.WriteByte(' ')
		b.WriteString(word)
		n += 1 + len(word)
	}
	b.WriteString("\r\n")
}

// unstructured returns s for an unstructured header field: as is when it
// is ASCII, else as RFC 2047 encoded words.
func unstructured(s string) string {
	if isASCII(s) {
		return s
	}
	return mime.QEncoding.Encode("utf-8", s)
}

var quoteEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

// phrase returns s as the display name of an address. B encoding keeps the
// encoded words free of the characters a phrase forbids.
func phrase(s string) string {
	if isASCII(s) {
		return `"` + quoteEscaper.Replace(s) + `"`
	}
	return mime.BEncoding.Encode("utf-8", s)
}

// addressList returns the address list s on one line, with non-ASCII
// display names encoded. A list that does not parse is kept as given.
func addressList(s string) string {
	s = oneLine(s)
	if isASCII(s) {
		return s
	}
	list, err := mail.ParseAddressList(s)
	if err != nil {
		return s
	}
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = "<" + a.Address + ">"
		if a.Name != "" {
			out[i] = phrase(a.Name) + " " + out[i]
		}
	}
	return strings.Join(out, ", ")
}

// oneLine turns runs of white space and control characters into single
// spaces and trims the ends, so a value cannot add header fields.
func oneLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r)
	}), " ")
}

func truncate(s string, runes int) string {
	if utf8.RuneCountInString(s) <= runes {
		return s
	}
	return string([]rune(s)[:runes])
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// localPart returns s reduced to characters safe in the local part of an
// address and in a file name, or def when nothing is left.
func localPart(s, def string) string {
	out := strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && (r == '+' || r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return r
		}
		return -1
	}, s)
	if out == "" {
		return def
	}
	return out
}

// durationSeconds rounds d to whole seconds, as RFC 3803 counts them.
func durationSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second/2) / time.Second)
}

// formatLength writes seconds as m:ss or h:mm:ss.
func formatLength(secs int64) string {
	if secs >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", secs/3600, secs/60%60, secs%60)
	}
	return fmt.Sprintf("%d:%02d", secs/60, secs%60)
}

// audioType returns the media type and parameters of the audio. An empty
// type is audio/wav, as for a Deposit; an unparsable one is labelled
// application/octet-stream rather than guessed.
func audioType(t string) (string, map[string]string) {
	if strings.TrimSpace(t) == "" {
		return "audio/wav", map[string]string{}
	}
	mt, params, err := mime.ParseMediaType(t)
	if err != nil || !strings.Contains(mt, "/") || mime.FormatMediaType(mt, params) == "" {
		return "application/octet-stream", map[string]string{}
	}
	return mt, params
}

// audioExt returns the file name extension for a media type. The table is
// fixed, not the system's mime.types, so the bytes do not vary by machine.
func audioExt(mt string) string {
	switch mt {
	case "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave":
		return ".wav"
	case "audio/mpeg", "audio/mp3":
		return ".mp3"
	case "audio/ogg":
		return ".ogg"
	case "audio/opus":
		return ".opus"
	case "audio/flac", "audio/x-flac":
		return ".flac"
	case "audio/mp4", "audio/x-m4a", "audio/aac":
		return ".m4a"
	case "audio/webm":
		return ".webm"
	case "audio/basic":
		return ".au"
	case "audio/amr":
		return ".amr"
	case "audio/gsm", "audio/x-gsm":
		return ".gsm"
	}
	return ".bin"
}
