package imapserver

import (
	"fmt"
	"io"
	"mime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
)

// respWriter is where a command's session method writes its untagged
// responses: message updates, FETCH data, LIST entries, COPYUID.
type respWriter struct {
	c      *conn
	silent bool // CLOSE: expunges are not told
	lsub   bool
	status *imap.StatusOptions // LIST RETURN (STATUS ...)
	// names maps a body section to the item name the client asked for
	// (RFC822, RFC822.HEADER, RFC822.TEXT), when it is not BODY[...].
	names map[*imap.FetchItemBodySection]string
}

func (w *respWriter) enc() *encoder { return &w.c.enc }

// WriteExpunge tells of a removed message: EXPUNGE by sequence number,
// or VANISHED by UID once QRESYNC is enabled.
func (w *respWriter) WriteExpunge(seq uint32, uid um.UID) error {
	switch {
	case w.silent:
	case w.c.qresync:
		w.enc().raw("* VANISHED " + strconv.FormatUint(uint64(uid), 10) + "\r\n")
	default:
		w.enc().raw("* " + strconv.FormatUint(uint64(seq), 10) + " EXPUNGE\r\n")
	}
	return nil
}

func (w *respWriter) WriteMailboxFlags(flags []imap.Flag) error {
	e := w.enc()
	e.raw("* FLAGS ")
	e.flags(flags)
	e.crlf()
	return nil
}

// WritePermanentFlags sends PERMANENTFLAGS in an untagged OK, as a
// folder's flags change while it is selected.
func (w *respWriter) WritePermanentFlags(flags []imap.Flag) error {
	e := w.enc()
	e.raw("* OK [PERMANENTFLAGS ")
	e.flags(flags)
	e.raw("] Flags permitted\r\n")
	return nil
}

func (w *respWriter) WriteNumMessages(n uint32) error {
	w.enc().raw("* " + strconv.FormatUint(uint64(n), 10) + " EXISTS\r\n")
	return nil
}

func (w *respWriter) WriteMessageFlags(seq uint32, ent *entry) error {
	m := &ent.msg
	e := w.enc()
	e.raw(fmt.Sprintf("* %d FETCH (UID %d FLAGS ", seq, m.UID))
	e.flags(entryFlags(ent, w.c))
	if w.c.condstore {
		e.raw(" MODSEQ (" + strconv.FormatUint(m.ModSeq, 10) + ")")
	}
	e.raw(")\r\n")
	return nil
}

func (w *respWriter) WriteCopyData(d *imap.CopyData) error {
	w.enc().raw(fmt.Sprintf("* OK [COPYUID %d %s %s] Moved\r\n", d.UIDValidity, d.SourceUIDs.String(), d.DestUIDs.String()))
	return nil
}

// WriteList writes one LIST (or LSUB) entry, and its STATUS when asked.
func (w *respWriter) WriteList(d *imap.ListData) error {
	w.c.writeListAs(d, w.lsub, w.status)
	return nil
}

func (c *conn) writeList(d *imap.ListData) { c.writeListAs(d, false, nil) }

func (c *conn) writeListAs(d *imap.ListData, lsub bool, status *imap.StatusOptions) {
	e := &c.enc
	if lsub {
		e.raw("* LSUB (")
	} else {
		e.raw("* LIST (")
	}
	for i, a := range d.Attrs {
		if i > 0 {
			e.sp()
		}
		e.raw(string(a))
	}
	e.raw(") ")
	if d.Delim == 0 {
		e.raw("NIL")
	} else {
		e.string(string(d.Delim))
	}
	e.sp()
	e.mailbox(d.Mailbox)
	if d.ChildInfo != nil && d.ChildInfo.Subscribed {
		e.raw(` ("CHILDINFO" ("SUBSCRIBED"))`)
	}
	e.crlf()
	if d.Status != nil && status != nil {
		c.writeStatus(d.Status, status)
	}
}

// fetchMsg is one "* n FETCH (...)" response being written.
type fetchMsg struct {
	w     *respWriter
	n     int // items written
	items []string
}

// CreateMessage starts the FETCH response of message seq.
func (w *respWriter) CreateMessage(seq uint32) *fetchMsg {
	w.enc().raw("* " + strconv.FormatUint(uint64(seq), 10) + " FETCH (")
	return &fetchMsg{w: w}
}

func (m *fetchMsg) sep() *encoder {
	e := m.w.enc()
	if m.n > 0 {
		e.sp()
	}
	m.n++
	return e
}

func (m *fetchMsg) WriteUID(uid imap.UID) {
	m.sep().raw("UID " + strconv.FormatUint(uint64(uid), 10))
}

func (m *fetchMsg) WriteFlags(flags []imap.Flag) {
	e := m.sep()
	e.raw("FLAGS ")
	e.flags(flags)
}

func (m *fetchMsg) WriteModSeq(ms uint64) {
	m.sep().raw("MODSEQ (" + strconv.FormatUint(ms, 10) + ")")
}

func (m *fetchMsg) WriteInternalDate(t time.Time) {
	e := m.sep()
	e.raw("INTERNALDATE ")
	e.date(t)
}

func (m *fetchMsg) WriteRFC822Size(n int64) {
	m.sep().raw("RFC822.SIZE " + strconv.FormatInt(n, 10))
}

// WriteEnvelope writes an ENVELOPE encoded by writeEnvelope.
func (m *fetchMsg) WriteEnvelope(wire []byte) {
	e := m.sep()
	e.raw("ENVELOPE ")
	e.w.Write(wire)
}

// WriteBodyStructure writes a BODYSTRUCTURE (extended) or BODY encoded by
// writeBodyStructure.
func (m *fetchMsg) WriteBodyStructure(wire []byte, extended bool) {
	e := m.sep()
	if extended {
		e.raw("BODYSTRUCTURE ")
	} else {
		e.raw("BODY ")
	}
	e.w.Write(wire)
}

// literalWriter writes a literal's bytes straight to the connection and
// pads or cuts nothing: the caller writes exactly the announced size.
type literalWriter struct{ e *encoder }

func (l literalWriter) Write(p []byte) (int, error) { return l.e.w.Write(p) }
func (l literalWriter) Close() error                { return nil }

func (m *fetchMsg) WriteBodySection(s *imap.FetchItemBodySection, size int64) io.WriteCloser {
	e := m.sep()
	if name, ok := m.w.names[s]; ok {
		e.raw(name)
	} else {
		e.raw("BODY[" + sectionSpec(s.Part, s) + "]")
		if s.Partial != nil {
			e.raw("<" + strconv.FormatInt(s.Partial.Offset, 10) + ">")
		}
	}
	e.raw(" {" + strconv.FormatInt(size, 10) + "}\r\n")
	return literalWriter{e}
}

func (m *fetchMsg) WriteBinarySection(s *imap.FetchItemBinarySection, size int64) io.WriteCloser {
	e := m.sep()
	e.raw("BINARY[" + partSpec(s.Part) + "]")
	if s.Partial != nil {
		e.raw("<" + strconv.FormatInt(s.Partial.Offset, 10) + ">")
	}
	e.raw(" ~{" + strconv.FormatInt(size, 10) + "}\r\n")
	return literalWriter{e}
}

func (m *fetchMsg) WriteBinarySectionSize(s *imap.FetchItemBinarySectionSize, n uint32) {
	m.sep().raw("BINARY.SIZE[" + partSpec(s.Part) + "] " + strconv.FormatUint(uint64(n), 10))
}

func (m *fetchMsg) Close() error {
	m.w.enc().raw(")\r\n")
	return nil
}

func partSpec(part []int) string {
	s := make([]string, len(part))
	for i, p := range part {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ".")
}

func sectionSpec(part []int, s *imap.FetchItemBodySection) string {
	spec := partSpec(part)
	if s.Specifier != imap.PartSpecifierNone {
		if spec != "" {
			spec += "."
		}
		spec += string(s.Specifier)
		switch {
		case len(s.HeaderFields) > 0:
			spec += ".FIELDS (" + strings.Join(quoteAll(s.HeaderFields), " ") + ")"
		case len(s.HeaderFieldsNot) > 0:
			spec += ".FIELDS.NOT (" + strings.Join(quoteAll(s.HeaderFieldsNot), " ") + ")"
		}
	}
	return spec
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

const envelopeDate = "Mon, 02 Jan 2006 15:04:05 -0700"

func writeEnvelope(e *encoder, env *imap.Envelope) {
	if env == nil {
		env = &imap.Envelope{}
	}
	sender, replyTo := env.Sender, env.ReplyTo
	if sender == nil {
		sender = env.From
	}
	if replyTo == nil {
		replyTo = env.From
	}
	e.byte('(')
	if env.Date.IsZero() {
		e.raw("NIL")
	} else {
		e.string(env.Date.Format(envelopeDate))
	}
	e.sp()
	e.nstring(mime.QEncoding.Encode("utf-8", env.Subject))
	for _, l := range [][]imap.Address{env.From, sender, replyTo, env.To, env.Cc, env.Bcc} {
		e.sp()
		writeAddresses(e, l)
	}
	e.sp()
	if len(env.InReplyTo) > 0 {
		e.string("<" + strings.Join(env.InReplyTo, "> <") + ">")
	} else {
		e.raw("NIL")
	}
	e.sp()
	if env.MessageID != "" {
		e.string("<" + env.MessageID + ">")
	} else {
		e.raw("NIL")
	}
	e.byte(')')
}

func writeAddresses(e *encoder, l []imap.Address) {
	if len(l) == 0 {
		e.raw("NIL")
		return
	}
	e.byte('(')
	for _, a := range l {
		name, route := addressName(a)
		e.byte('(')
		e.nstring(mime.QEncoding.Encode("utf-8", name))
		e.sp()
		e.nstring(route)
		e.sp()
		e.nstring(a.Mailbox)
		e.sp()
		e.nstring(a.Host)
		e.byte(')')
	}
	e.byte(')')
}

func writeBodyStructure(e *encoder, bs imap.BodyStructure, ext bool) {
	switch b := bs.(type) {
	case *imap.BodyStructureSinglePart:
		writeSinglePart(e, b, ext)
	case *imap.BodyStructureMultiPart:
		e.byte('(')
		for _, ch := range b.Children {
			writeBodyStructure(e, ch, ext)
		}
		e.sp()
		e.string(b.Subtype)
		if ext {
			var x imap.BodyStructureMultiPartExt
			if b.Extended != nil {
				x = *b.Extended
			}
			e.sp()
			writeParams(e, x.Params)
			e.sp()
			writeDisposition(e, x.Disposition)
			e.sp()
			writeLanguage(e, x.Language)
			e.sp()
			e.nstring(x.Location)
		}
		e.byte(')')
	default:
		e.raw(`("text" "plain" NIL NIL NIL "7bit" 0 0)`)
	}
}

func writeSinglePart(e *encoder, b *imap.BodyStructureSinglePart, ext bool) {
	e.byte('(')
	e.string(b.Type)
	e.sp()
	e.string(b.Subtype)
	e.sp()
	writeParams(e, b.Params)
	e.sp()
	e.nstring(b.ID)
	e.sp()
	e.nstring(b.Description)
	e.sp()
	enc := b.Encoding
	if enc == "" {
		enc = "7bit"
	}
	e.string(enc)
	e.sp()
	e.num(b.Size)
	switch {
	case b.MessageRFC822 != nil:
		e.sp()
		writeEnvelope(e, b.MessageRFC822.Envelope)
		e.sp()
		writeBodyStructure(e, b.MessageRFC822.BodyStructure, ext)
		e.sp()
		e.num64(b.MessageRFC822.NumLines)
	case b.Text != nil:
		e.sp()
		e.num64(b.Text.NumLines)
	}
	if ext {
		var x imap.BodyStructureSinglePartExt
		if b.Extended != nil {
			x = *b.Extended
		}
		e.raw(" NIL ") // MD5
		writeDisposition(e, x.Disposition)
		e.sp()
		writeLanguage(e, x.Language)
		e.sp()
		e.nstring(x.Location)
	}
	e.byte(')')
}

func writeParams(e *encoder, params map[string]string) {
	if len(params) == 0 {
		e.raw("NIL")
		return
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	e.byte('(')
	for i, k := range keys {
		if i > 0 {
			e.sp()
		}
		e.string(k)
		e.sp()
		e.string(params[k])
	}
	e.byte(')')
}

func writeDisposition(e *encoder, d *imap.BodyStructureDisposition) {
	if d == nil {
		e.raw("NIL")
		return
	}
	e.byte('(')
	e.string(d.Value)
	e.sp()
	writeParams(e, d.Params)
	e.byte(')')
}

func writeLanguage(e *encoder, l []string) {
	switch len(l) {
	case 0:
		e.raw("NIL")
	case 1:
		e.string(l[0])
	default:
		e.byte('(')
		for i, s := range l {
			if i > 0 {
				e.sp()
			}
			e.string(s)
		}
		e.byte(')')
	}
}
