package imapserver

import (
	"bytes"
	"errors"
	"io"
	"mime/quotedprintable"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// rendered returns the message as IMAP shows it, from the server's cache
// or rendered now, and keeps it in the view entry. Rendering reads no
// content.
func (sess *session) rendered(e *entry) *rendered {
	if e.r == nil {
		e.r = sess.srv.cache.get(&e.msg, sess.mailbox, sess.srv.render)
	}
	return e.r
}

// email returns the message as an e-mail.
func (sess *session) email(e *entry) *um.Email { return sess.rendered(e).email }

// section is one body or binary section of one message, ready to write:
// either bytes at hand or a range of the rendered message.
type section struct {
	body   *imap.FetchItemBodySection
	binary *imap.FetchItemBinarySection
	data   []byte
	r      io.Reader // when data is nil
	size   int64
	close  func()
}

// needsRendering reports whether a FETCH asks for anything taken from the
// rendered message.
func needsRendering(o *imap.FetchOptions) bool {
	return o.RFC822Size || o.Envelope || o.BodyStructure != nil || needsContent(o)
}

func needsContent(o *imap.FetchOptions) bool {
	return len(o.BodySection) > 0 || len(o.BinarySection) > 0 || len(o.BinarySectionSize) > 0
}

func (sess *session) Fetch(w *respWriter, numSet imap.NumSet, options *imap.FetchOptions) (err error) {
	defer sess.guard(&err)()
	v, err := sess.live()
	if err != nil {
		return err
	}
	es, seqs := sess.resolve(numSet)
	_, isUID := numSet.(imap.UIDSet)
	if options.ChangedSince > 0 {
		es, seqs = changedSince(es, seqs, options.ChangedSince)
	}
	seenNow := sess.markSeen(v, es, options)
	if err := sess.writeKeywords(w, v); err != nil {
		return err
	}
	for i, e := range es {
		if err := sess.fetchOne(w, e, seqs[i], options, isUID, seenNow[e.msg.ID]); err != nil {
			return err
		}
	}
	return nil
}

// markSeen sets \Seen through um on the messages a non-PEEK body fetch
// reads, as playing them on the phone would, and returns those changed.
func (sess *session) markSeen(v *view, es []*entry, o *imap.FetchOptions) map[uuid.UUID]bool {
	if v.readOnly {
		return nil
	}
	peekOnly := true
	for _, bs := range o.BodySection {
		peekOnly = peekOnly && bs.Peek
	}
	for _, bs := range o.BinarySection {
		peekOnly = peekOnly && bs.Peek
	}
	if peekOnly {
		return nil
	}
	var ids []uuid.UUID
	for _, e := range es {
		if !e.gone && !e.msg.Flags.Has(um.FlagHeard) {
			ids = append(ids, e.msg.ID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	changed, err := sess.mb.SetFlags(sess.ctx, ids, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard})
	if err != nil {
		// The fetch still serves the content; the next sync shows the state.
		sess.srv.logf("imapserver: mark heard in %q: %v", sess.mailbox, err)
		return nil
	}
	out := make(map[uuid.UUID]bool, len(changed))
	for _, m := range changed {
		out[m.ID] = true
		for _, e := range es {
			if e.msg.ID == m.ID {
				e.msg.Flags, e.msg.Keywords = m.Flags, m.Keywords
				v.noteModSeq(&e.msg, m.ModSeq)
				e.dirty = false
			}
		}
	}
	return out
}

func (sess *session) fetchOne(w *respWriter, e *entry, seq uint32, o *imap.FetchOptions, isUID, seenNow bool) error {
	m := &e.msg
	// FLAGS, UID and INTERNALDATE come from the view: a client syncing its
	// flags (FETCH 1:* (UID FLAGS)) needs no rendering of any message.
	var em *um.Email
	if needsRendering(o) {
		em = sess.email(e)
	}
	// Everything that can fail is prepared before the response starts, so
	// a message removed meanwhile is left out instead of breaking the
	// response.
	var env, bs []byte
	var secs []*section
	defer func() {
		for _, s := range secs {
			if s.close != nil {
				s.close()
			}
		}
	}()
	var err error
	if o.Envelope {
		if env, err = sess.envelope(e); err != nil {
			return sess.skip(err)
		}
	}
	if o.BodyStructure != nil {
		if bs, err = sess.bodyStructure(e, o.BodyStructure.Extended); err != nil {
			return sess.skip(err)
		}
	}
	for _, item := range o.BodySection {
		s, err := sess.bodySection(e, em, item)
		secs = append(secs, s)
		if err != nil {
			return sess.skip(err)
		}
	}
	for _, item := range o.BinarySection {
		s, err := sess.binarySection(e, em, item)
		secs = append(secs, s)
		if err != nil {
			return sess.skip(err)
		}
	}
	var binSizes []uint32
	for _, item := range o.BinarySectionSize {
		n, err := sess.binarySize(e, em, item.Part)
		if err != nil {
			return sess.skip(err)
		}
		binSizes = append(binSizes, uint32(n))
	}

	rw := w.CreateMessage(seq)
	if o.UID || isUID {
		rw.WriteUID(imap.UID(m.UID))
	}
	if o.Flags || seenNow {
		rw.WriteFlags(entryFlags(e, w.c))
	}
	if o.ModSeq || (w.c.condstore && (o.Flags || seenNow)) {
		rw.WriteModSeq(m.ModSeq)
	}
	if o.InternalDate {
		rw.WriteInternalDate(m.Added)
	}
	if o.RFC822Size {
		rw.WriteRFC822Size(em.Size())
	}
	if o.Envelope {
		rw.WriteEnvelope(env)
	}
	if o.BodyStructure != nil {
		rw.WriteBodyStructure(bs, o.BodyStructure.Extended)
	}
	for _, s := range secs {
		var wc io.WriteCloser
		if s.body != nil {
			wc = rw.WriteBodySection(s.body, s.size)
		} else {
			wc = rw.WriteBinarySection(s.binary, s.size)
		}
		if err := writeSection(wc, s); err != nil {
			// The literal is incomplete: the stream cannot be repaired.
			sess.srv.logf("imapserver: fetch of %s in %q: %v", m.ID, sess.mailbox, err)
			sess.nc.abort()
			return err
		}
	}
	for i, item := range o.BinarySectionSize {
		rw.WriteBinarySectionSize(item, binSizes[i])
	}
	return rw.Close()
}

func writeSection(wc io.WriteCloser, s *section) error {
	var err error
	if s.data != nil || s.r == nil {
		_, err = wc.Write(s.data)
	} else {
		var n int64
		n, err = io.Copy(wc, s.r)
		if err == nil && n != s.size {
			err = io.ErrUnexpectedEOF
		}
	}
	if cerr := wc.Close(); err == nil {
		err = cerr
	}
	return err
}

// skip leaves a message out of a FETCH when it went away since the last
// sync (RFC 2180 section 4.1.2); other errors fail the command.
func (sess *session) skip(err error) error {
	if errors.Is(err, um.ErrNotFound) {
		return nil
	}
	return sess.srv.imapError(err, roleSource)
}

// content opens a Raw message's bytes.
func (sess *session) content(e *entry) (io.ReadCloser, error) {
	return sess.mb.OpenAudio(sess.ctx, e.msg.ID)
}

// rawBytes reads a Raw message's whole content.
func (sess *session) rawBytes(e *entry) ([]byte, error) {
	return sess.readRaw(e, make([]byte, max(e.msg.Size, 0)))
}

// readRaw reads a Raw message's whole content into b, which has its
// stored size: growing a buffer from empty, as io.ReadAll does, copied
// and cleared a large message about twice over.
func (sess *session) readRaw(e *entry, b []byte) ([]byte, error) {
	rc, err := sess.content(e)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, b)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return b[:n], nil
	}
	return b, err
}

// layout returns the layout of a Raw message, scanned from its content
// through a small buffer, or, for a message scanEntity leaves to
// parseEntity, read whole.
func (sess *session) layout(e *entry) (*layout, error) {
	return sess.srv.cache.layout(sess.rendered(e), func() (*entity, []byte, error) {
		rc, err := sess.content(e)
		if err != nil {
			return nil, nil, err
		}
		root, ok, err := scanEntity(rc)
		rc.Close()
		if err != nil || ok {
			return root, nil, err
		}
		b, err := sess.rawBytes(e)
		if err != nil {
			return nil, nil, err
		}
		return parseEntity(b, 0, "text/plain"), b, nil
	})
}

// envelope returns the message's encoded ENVELOPE, built once per message
// and server (while cached).
func (sess *session) envelope(e *entry) ([]byte, error) {
	r := sess.rendered(e)
	return sess.srv.cache.envelope(r, func() ([]byte, error) {
		if header := r.email.Header(); header != nil {
			return header, nil
		}
		return sess.rawHeader(e)
	})
}

// rawHeader returns the top-level header block of a Raw message, read
// from its content alone the first time.
func (sess *session) rawHeader(e *entry) ([]byte, error) {
	r := sess.rendered(e)
	return sess.srv.cache.header(r, func() ([]byte, error) {
		rc, err := sess.content(e)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		h, err := r.email.ReadHeader(rc)
		// Kept in the cache: without the room ReadHeader grew it with (a
		// 547-byte header came in 704).
		return bytes.Clone(h), err
	})
}

// bodyStructure returns the message's encoded BODYSTRUCTURE (extended)
// or BODY, built once per message and server (while cached).
func (sess *session) bodyStructure(e *entry, extended bool) ([]byte, error) {
	r := sess.rendered(e)
	st := r.email.Structure()
	if st == nil {
		// An e-mail's structure comes with its layout, from one parse.
		if _, err := sess.layout(e); err != nil {
			return nil, err
		}
	}
	return sess.srv.cache.bodyStructure(r, extended, func() (imap.BodyStructure, error) {
		if st == nil {
			return nil, errServerBug() // the layout kept it
		}
		return partStructure(st), nil
	})
}

func partStructure(p *um.MIMEPart) imap.BodyStructure {
	var disp *imap.BodyStructureDisposition
	if p.Disposition != "" {
		disp = &imap.BodyStructureDisposition{Value: p.Disposition, Params: p.DispositionParams}
	}
	if p.Type == "multipart" {
		mp := &imap.BodyStructureMultiPart{
			Subtype:  p.Subtype,
			Extended: &imap.BodyStructureMultiPartExt{Params: p.Params, Disposition: disp, Language: p.Language, Location: p.Location},
		}
		for _, c := range p.Children {
			mp.Children = append(mp.Children, partStructure(c))
		}
		return mp
	}
	sp := &imap.BodyStructureSinglePart{
		Type: p.Type, Subtype: p.Subtype, Params: p.Params,
		ID: p.ID, Description: p.Description, Encoding: p.Encoding, Size: uint32(p.Size),
		Extended: &imap.BodyStructureSinglePartExt{Disposition: disp, Language: p.Language, Location: p.Location},
	}
	if p.Type == "text" {
		sp.Text = &imap.BodyStructureText{NumLines: p.Lines}
	}
	return sp
}

// part returns the MIME part a section path names in a rendered voicemail,
// or nil.
func part(st *um.MIMEPart, path []int) *um.MIMEPart {
	p := st
	for _, n := range path {
		if n < 1 || n > len(p.Children) {
			return nil
		}
		p = p.Children[n-1]
	}
	return p
}

// audioPart is where a rendered voicemail's content (the audio) lies.
func audioPart(st *um.MIMEPart) *um.MIMEPart {
	for _, c := range st.Children {
		if c.Type != "text" {
			return c
		}
	}
	return nil
}

func clip(off, n int64, partial *imap.SectionPartial) (int64, int64) {
	if partial == nil {
		return off, n
	}
	if partial.Offset >= n {
		return off + n, 0
	}
	return off + partial.Offset, min(partial.Size, n-partial.Offset)
}

// bodySection prepares BODY[...]. For voicemail it maps the section to a
// byte range of the rendered message with Structure's offsets, so the
// audio is opened only when the range covers it.
func (sess *session) bodySection(e *entry, em *um.Email, item *imap.FetchItemBodySection) (*section, error) {
	s := &section{body: item}
	st := em.Structure()
	if st == nil {
		return sess.rawBodySection(e, s)
	}
	var off, n int64
	switch {
	case len(item.Part) == 0 && item.Specifier == imap.PartSpecifierHeader && (len(item.HeaderFields) > 0 || len(item.HeaderFieldsNot) > 0):
		s.data = extractBodySection(em.Header(), item)
		if s.data == nil {
			s.data = []byte{}
		}
		s.size = int64(len(s.data))
		return s, nil
	case len(item.Part) == 0 && item.Specifier == imap.PartSpecifierNone:
		off, n = 0, st.End
	case len(item.Part) == 0 && item.Specifier == imap.PartSpecifierHeader:
		off, n = 0, st.BodyStart
	case len(item.Part) == 0 && item.Specifier == imap.PartSpecifierText:
		off, n = st.BodyStart, st.End-st.BodyStart
	default:
		p := part(st, item.Part)
		switch {
		case p == nil || len(item.Part) == 0:
			// No such part, or MIME of the whole message: empty.
		case item.Specifier == imap.PartSpecifierNone:
			off, n = p.BodyStart, p.End-p.BodyStart
		case item.Specifier == imap.PartSpecifierMIME:
			off, n = p.HeaderStart, p.BodyStart-p.HeaderStart
		}
		// HEADER and TEXT of a part apply to message/rfc822 parts only,
		// which a voicemail has none of: empty.
	}
	off, n = clip(off, n, item.Partial)
	s.size = n
	if n == 0 {
		s.data = []byte{}
		return s, nil
	}
	var content io.Reader
	if a := audioPart(st); a != nil && off < a.End && off+n > a.BodyStart {
		rc, err := sess.mb.OpenAudio(sess.ctx, e.msg.ID)
		if err != nil {
			return s, err
		}
		s.close = func() { rc.Close() }
		content = rc
	}
	s.r = em.Range(content, off, n)
	return s, nil
}

// rawBodySection prepares BODY[...] of a Raw message: a range of its
// content read from the store, or its header at hand.
func (sess *session) rawBodySection(e *entry, s *section) (*section, error) {
	item := s.body
	var rs rawSection
	switch {
	case len(item.Part) == 0 && item.Specifier == imap.PartSpecifierNone:
		rs = rawSection{off: 0, n: e.msg.Size}
	case len(item.Part) == 0:
		// HEADER, HEADER.FIELDS and TEXT need the header only.
		head, err := sess.rawHeader(e)
		if err != nil {
			return s, err
		}
		rs = topSection(head, e.msg.Size, item)
	default:
		l, err := sess.layout(e)
		if err != nil {
			return s, err
		}
		rs = l.section(item)
	}
	data := rs.data
	if data == nil && rs.filter == nil {
		off, n := clip(rs.off, rs.n, item.Partial)
		s.size = n
		if n == 0 {
			s.data = []byte{}
			return s, nil
		}
		rc, err := sess.content(e)
		if err != nil {
			return s, err
		}
		s.close = func() { rc.Close() }
		s.r, err = openRange(rc, off, n)
		return s, err
	}
	if data == nil {
		// The header of an embedded message, to filter.
		rc, err := sess.content(e)
		if err != nil {
			return s, err
		}
		defer rc.Close()
		r, err := openRange(rc, rs.off, rs.n)
		if err != nil {
			return s, err
		}
		if data, err = io.ReadAll(r); err != nil {
			return s, err
		}
	}
	if rs.filter != nil {
		data = headerFields(data, rs.filter, rs.not)
	}
	s.data = partialOf(data, item.Partial)
	s.size = int64(len(s.data))
	return s, nil
}

// binarySection prepares BINARY[...]: decoded content. For voicemail,
// section 2 is the audio as stored.
func (sess *session) binarySection(e *entry, em *um.Email, item *imap.FetchItemBinarySection) (*section, error) {
	s := &section{binary: item}
	st := em.Structure()
	if st == nil {
		b, err := sess.rawBytes(e)
		if err != nil {
			return s, err
		}
		s.data = extractBinarySection(b, item)
		if s.data == nil {
			s.data = []byte{}
		}
		s.size = int64(len(s.data))
		return s, nil
	}
	p := part(st, item.Part)
	switch {
	case p == nil:
		s.data = []byte{}
	case len(item.Part) == 0:
		off, n := clip(0, st.End, item.Partial)
		return sess.bodySection(e, em, &imap.FetchItemBodySection{Partial: &imap.SectionPartial{Offset: off, Size: n}})
	case p == audioPart(st):
		off, n := clip(0, e.msg.Size, item.Partial)
		rc, err := sess.mb.OpenAudio(sess.ctx, e.msg.ID)
		if err != nil {
			return s, err
		}
		s.close = func() { rc.Close() }
		if _, err := io.CopyN(io.Discard, rc, off); err != nil {
			return s, err
		}
		s.r, s.size = io.LimitReader(rc, n), n
		return s, nil
	default:
		b, err := decodedText(em, p)
		if err != nil {
			return s, err
		}
		off, n := clip(0, int64(len(b)), item.Partial)
		s.data = b[off : off+n]
	}
	s.size = int64(len(s.data))
	return s, nil
}

func (sess *session) binarySize(e *entry, em *um.Email, path []int) (int64, error) {
	st := em.Structure()
	if st == nil {
		b, err := sess.rawBytes(e)
		if err != nil {
			return 0, err
		}
		return int64(extractBinarySectionSize(b, &imap.FetchItemBinarySectionSize{Part: path})), nil
	}
	p := part(st, path)
	switch {
	case p == nil:
		return 0, nil
	case len(path) == 0:
		return st.End, nil
	case p == audioPart(st):
		return e.msg.Size, nil
	}
	b, err := decodedText(em, p)
	return int64(len(b)), err
}

func decodedText(em *um.Email, p *um.MIMEPart) ([]byte, error) {
	var r io.Reader = em.Range(nil, p.BodyStart, p.End-p.BodyStart)
	if p.Encoding == "quoted-printable" {
		r = quotedprintable.NewReader(r)
	}
	return io.ReadAll(r)
}
