package imapserver

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// numKind says whether a command names messages by sequence number or UID.
type numKind uint8

const (
	numKindSeq numKind = iota
	numKindUID
)

func (c *conn) cmdFetch(tag string, uid bool) error {
	var set imap.NumSet
	err := c.dec.sp()
	if err == nil {
		set, err = c.dec.numSet(uid)
	}
	if err == nil {
		err = c.dec.sp()
	}
	o := &imap.FetchOptions{UID: uid}
	vanished := false
	w := &respWriter{c: c, names: map[*imap.FetchItemBodySection]string{}}
	if err == nil {
		if c.dec.accept('(') {
			c.dec.unread()
			err = c.dec.list(func() error { return c.fetchAtt(o, w) })
		} else {
			err = c.fetchAtt(o, w)
		}
	}
	if err == nil && c.dec.accept(' ') {
		// (CHANGEDSINCE n [VANISHED])
		err = c.dec.atoms(func(a string) error {
			switch a {
			case "CHANGEDSINCE":
				if err := c.dec.sp(); err != nil {
					return err
				}
				o.ChangedSince, err = c.dec.number64()
				o.ModSeq = true
				return err
			case "VANISHED":
				vanished = true
				return nil
			}
			return badSyntax("Unknown FETCH modifier")
		})
	}
	if err == nil {
		err = c.end()
	}
	if err != nil {
		return err
	}
	if o.ModSeq {
		if c.srv.modSeqs == nil {
			return badSyntax("CONDSTORE is not supported")
		}
		c.enableCondstore()
	}
	if vanished {
		if !uid || !c.qresync || o.ChangedSince == 0 {
			return badSyntax("VANISHED needs UID FETCH, QRESYNC and CHANGEDSINCE")
		}
		if err := c.sess.fetchVanished(&respWriter{c: c}, set, o.ChangedSince); err != nil {
			return err
		}
	}
	if err := c.sess.Fetch(w, set, o); err != nil {
		return err
	}
	if err := c.poll(uid); err != nil {
		return err
	}
	return c.ok(tag, "", "FETCH completed")
}

func (c *conn) fetchAtt(o *imap.FetchOptions, w *respWriter) error {
	name, err := c.dec.token(func(b byte) bool { return isAtomChar(b) && b != '[' && b != '<' }, "fetch item")
	if err != nil {
		return err
	}
	switch strings.ToUpper(name) {
	case "ALL", "FAST", "FULL":
		o.Flags, o.InternalDate, o.RFC822Size = true, true, true
		if !strings.EqualFold(name, "FAST") {
			o.Envelope = true
		}
		if strings.EqualFold(name, "FULL") {
			o.BodyStructure = &imap.FetchItemBodyStructure{}
		}
	case "UID":
		o.UID = true
	case "FLAGS":
		o.Flags = true
	case "INTERNALDATE":
		o.InternalDate = true
	case "RFC822.SIZE":
		o.RFC822Size = true
	case "ENVELOPE":
		o.Envelope = true
	case "BODYSTRUCTURE":
		o.BodyStructure = &imap.FetchItemBodyStructure{Extended: true}
	case "MODSEQ":
		o.ModSeq = true
	case "RFC822":
		s := &imap.FetchItemBodySection{}
		o.BodySection = append(o.BodySection, s)
		w.names[s] = "RFC822"
	case "RFC822.HEADER":
		s := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true}
		o.BodySection = append(o.BodySection, s)
		w.names[s] = "RFC822.HEADER"
	case "RFC822.TEXT":
		s := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText}
		o.BodySection = append(o.BodySection, s)
		w.names[s] = "RFC822.TEXT"
	case "BODY", "BODY.PEEK":
		if !c.dec.accept('[') {
			if strings.EqualFold(name, "BODY.PEEK") {
				return badSyntax("BODY.PEEK needs a section")
			}
			if o.BodyStructure == nil {
				o.BodyStructure = &imap.FetchItemBodyStructure{}
			}
			return nil
		}
		s := &imap.FetchItemBodySection{Peek: strings.EqualFold(name, "BODY.PEEK")}
		if err := c.section(s); err != nil {
			return err
		}
		p, err := c.partial()
		if err != nil {
			return err
		}
		s.Partial = p
		o.BodySection = append(o.BodySection, s)
	case "BINARY", "BINARY.PEEK", "BINARY.SIZE":
		if err := c.dec.expect('['); err != nil {
			return err
		}
		var part []int
		if !c.dec.accept(']') {
			p, err := c.partNumbers()
			if err != nil {
				return err
			}
			part = p
			if err := c.dec.expect(']'); err != nil {
				return err
			}
		}
		if strings.EqualFold(name, "BINARY.SIZE") {
			o.BinarySectionSize = append(o.BinarySectionSize, &imap.FetchItemBinarySectionSize{Part: part})
			return nil
		}
		p, err := c.partial()
		if err != nil {
			return err
		}
		o.BinarySection = append(o.BinarySection, &imap.FetchItemBinarySection{Part: part, Partial: p, Peek: strings.EqualFold(name, "BINARY.PEEK")})
	default:
		return badSyntax("Unknown FETCH item %q", name)
	}
	return nil
}

// partNumbers reads "1.2.3" (no trailing dot).
func (c *conn) partNumbers() ([]int, error) {
	var part []int
	for {
		n, err := c.dec.number()
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, badSyntax("Part numbers start at 1")
		}
		part = append(part, int(n))
		b, err := c.dec.peek()
		if err != nil {
			return nil, err
		}
		if b != '.' {
			return part, nil
		}
		two, err := c.dec.br.Peek(2)
		if err != nil {
			return nil, err
		}
		if two[1] < '0' || two[1] > '9' {
			return part, nil
		}
		c.dec.readByte()
	}
}

// section reads a body section after "[" up to and including "]".
func (c *conn) section(s *imap.FetchItemBodySection) error {
	if c.dec.accept(']') {
		return nil
	}
	if b, err := c.dec.peek(); err == nil && b >= '0' && b <= '9' {
		p, err := c.partNumbers()
		if err != nil {
			return err
		}
		s.Part = p
		if !c.dec.accept('.') {
			return c.dec.expect(']')
		}
	}
	spec, err := c.dec.token(func(b byte) bool { return isAtomChar(b) && b != '[' }, "section")
	if err != nil {
		return err
	}
	switch strings.ToUpper(spec) {
	case "HEADER":
		s.Specifier = imap.PartSpecifierHeader
	case "TEXT":
		s.Specifier = imap.PartSpecifierText
	case "MIME":
		if len(s.Part) == 0 {
			return badSyntax("MIME needs a part")
		}
		s.Specifier = imap.PartSpecifierMIME
	case "HEADER.FIELDS", "HEADER.FIELDS.NOT":
		s.Specifier = imap.PartSpecifierHeader
		if err := c.dec.sp(); err != nil {
			return err
		}
		var fields []string
		err := c.dec.list(func() error {
			f, err := c.dec.astring()
			fields = append(fields, f)
			if len(fields) > 1000 {
				return badSyntax("Too many header fields")
			}
			return err
		})
		if err != nil {
			return err
		}
		if len(fields) == 0 {
			return badSyntax("Empty header field list")
		}
		if strings.EqualFold(spec, "HEADER.FIELDS") {
			s.HeaderFields = fields
		} else {
			s.HeaderFieldsNot = fields
		}
	default:
		return badSyntax("Unknown section %q", spec)
	}
	return c.dec.expect(']')
}

func (c *conn) partial() (*imap.SectionPartial, error) {
	if !c.dec.accept('<') {
		return nil, nil
	}
	off, err := c.dec.number()
	if err != nil {
		return nil, err
	}
	if err := c.dec.expect('.'); err != nil {
		return nil, err
	}
	n, err := c.dec.number()
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, badSyntax("Partial size must be positive")
	}
	if err := c.dec.expect('>'); err != nil {
		return nil, err
	}
	return &imap.SectionPartial{Offset: int64(off), Size: int64(n)}, nil
}

func (c *conn) cmdStore(tag string, uid bool) error {
	var set imap.NumSet
	err := c.dec.sp()
	if err == nil {
		set, err = c.dec.numSet(uid)
	}
	if err == nil {
		err = c.dec.sp()
	}
	opts := &imap.StoreOptions{}
	if err == nil && c.dec.accept('(') {
		c.dec.unread()
		err = c.dec.atoms(func(a string) error {
			if a != "UNCHANGEDSINCE" {
				return badSyntax("Unknown STORE modifier")
			}
			if err := c.dec.sp(); err != nil {
				return err
			}
			n, err := c.dec.number64()
			opts.UnchangedSince = n
			return err
		})
		if err == nil {
			err = c.dec.sp()
		}
	}
	var item string
	if err == nil {
		item, err = c.dec.atom()
	}
	flags := &imap.StoreFlags{}
	if err == nil {
		item = strings.ToUpper(item)
		if strings.HasSuffix(item, ".SILENT") {
			flags.Silent = true
			item = strings.TrimSuffix(item, ".SILENT")
		}
		switch item {
		case "FLAGS":
			flags.Op = imap.StoreFlagsSet
		case "+FLAGS":
			flags.Op = imap.StoreFlagsAdd
		case "-FLAGS":
			flags.Op = imap.StoreFlagsDel
		default:
			err = badSyntax("Unknown STORE item")
		}
	}
	if err == nil {
		err = c.dec.sp()
	}
	if err == nil {
		if c.dec.accept('(') {
			c.dec.unread()
			flags.Flags, err = c.dec.flagList()
		} else {
			for {
				var f string
				if f, err = c.dec.flag(); err != nil {
					break
				}
				flags.Flags = append(flags.Flags, imap.Flag(f))
				if !c.dec.accept(' ') {
					break
				}
			}
		}
	}
	if err == nil {
		err = c.end()
	}
	if err != nil {
		return err
	}
	if opts.UnchangedSince > 0 {
		if c.srv.modSeqs == nil {
			return badSyntax("CONDSTORE is not supported")
		}
		c.enableCondstore()
	}
	c.sess.modified = nil
	w := &respWriter{c: c}
	if err := c.sess.Store(w, set, flags, opts); err != nil {
		return err
	}
	if err := c.poll(uid); err != nil {
		return err
	}
	if c.sess.modified != nil {
		return c.ok(tag, "MODIFIED "+c.sess.modified.String(), "Conditional STORE failed for some messages")
	}
	return c.ok(tag, "", "STORE completed")
}

func (c *conn) cmdCopy(tag string, uid, move bool) error {
	a := c.args()
	set := a.sp().numSet(uid)
	dest := a.sp().mailbox()
	if err := a.end(); err != nil {
		return err
	}
	if move {
		if err := c.sess.Move(&respWriter{c: c}, set, dest); err != nil {
			return err
		}
		if err := c.poll(true); err != nil {
			return err
		}
		return c.ok(tag, "", "MOVE completed")
	}
	data, err := c.sess.Copy(set, dest)
	if err != nil {
		return err
	}
	if err := c.poll(true); err != nil {
		return err
	}
	code := ""
	if data != nil {
		code = fmt.Sprintf("COPYUID %d %s %s", data.UIDValidity, data.SourceUIDs.String(), data.DestUIDs.String())
	}
	return c.ok(tag, code, "COPY completed")
}

// searchParser reads SEARCH criteria within the budgets: nesting depth
// (NOT, OR, parentheses) and the number of keys.
type searchParser struct {
	c    *conn
	keys int
	uid  bool
}

func (c *conn) cmdSearch(tag string, uid bool) error {
	opts := &imap.SearchOptions{}
	esearch := false
	err := c.dec.sp()
	if err != nil {
		return err
	}
	// RETURN (...) and CHARSET come first.
	p := &searchParser{c: c, uid: uid}
	crit := &imap.SearchCriteria{}
	first, prefix := true, true
	for {
		if !first && !c.dec.accept(' ') {
			break
		}
		first = false
		b, err := c.dec.peek()
		if err != nil {
			return err
		}
		if prefix && (b == 'R' || b == 'r' || b == 'C' || b == 'c') {
			// Maybe RETURN or CHARSET.
			key, err := c.dec.token(func(b byte) bool { return isAtomChar(b) }, "search key")
			if err != nil {
				return err
			}
			switch strings.ToUpper(key) {
			case "RETURN":
				esearch = true
				if err := c.dec.sp(); err != nil {
					return err
				}
				if err := c.dec.atoms(func(a string) error {
					switch a {
					case "MIN":
						opts.ReturnMin = true
					case "MAX":
						opts.ReturnMax = true
					case "ALL":
						opts.ReturnAll = true
					case "COUNT":
						opts.ReturnCount = true
					case "SAVE":
						opts.ReturnSave = true
					default:
						return badSyntax("Unknown RETURN option")
					}
					return nil
				}); err != nil {
					return err
				}
				continue
			case "CHARSET":
				if err := c.dec.sp(); err != nil {
					return err
				}
				cs, err := c.dec.astring()
				if err != nil {
					return err
				}
				if !strings.EqualFold(cs, "UTF-8") && !strings.EqualFold(cs, "US-ASCII") {
					return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeBadCharset, Text: "Only UTF-8 and US-ASCII"}
				}
				continue
			default:
				prefix = false
				if err := p.keyNamed(key, crit, 0); err != nil {
					return err
				}
				continue
			}
		}
		prefix = false
		if err := p.key(crit, 0); err != nil {
			return err
		}
	}
	if p.keys == 0 {
		return badSyntax("Missing search criteria")
	}
	if err := c.end(); err != nil {
		return err
	}
	// IMAP4rev2 answers every SEARCH with ESEARCH (RFC 9051 6.4.4).
	esearch = esearch || c.rev2
	if esearch && !opts.ReturnMin && !opts.ReturnMax && !opts.ReturnCount && !opts.ReturnSave {
		opts.ReturnAll = true
	}
	kind := numKindSeq
	if uid {
		kind = numKindUID
	}
	withModSeq := hasModSeq(crit)
	if withModSeq {
		if c.srv.modSeqs == nil {
			return badSyntax("CONDSTORE is not supported")
		}
		c.enableCondstore()
	}
	var data *imap.SearchData
	err = c.watchHangup(func() (err error) {
		data, err = c.sess.Search(kind, crit, opts)
		return err
	})
	if err != nil {
		return err
	}
	e := &c.enc
	if esearch {
		e.raw(`* ESEARCH (TAG "` + tag + `")`)
		if uid {
			e.raw(" UID")
		}
		if opts.ReturnMin && data.Count > 0 {
			e.raw(" MIN " + strconv.FormatUint(uint64(data.Min), 10))
		}
		if opts.ReturnMax && data.Count > 0 {
			e.raw(" MAX " + strconv.FormatUint(uint64(data.Max), 10))
		}
		if opts.ReturnAll && data.Count > 0 {
			e.raw(" ALL " + data.All.String())
		}
		if opts.ReturnCount {
			e.raw(" COUNT " + strconv.FormatUint(uint64(data.Count), 10))
		}
		if withModSeq && data.Count > 0 {
			m := c.sess.searchMod
			ms := m.all
			if !opts.ReturnAll && !opts.ReturnCount {
				ms = 0
				if opts.ReturnMin {
					ms = max(ms, m.min)
				}
				if opts.ReturnMax {
					ms = max(ms, m.max)
				}
			}
			e.raw(" MODSEQ " + strconv.FormatUint(ms, 10))
		}
		e.crlf()
	} else {
		e.raw("* SEARCH")
		switch all := data.All.(type) {
		case imap.SeqSet:
			nums, _ := all.Nums()
			for _, n := range nums {
				e.raw(" " + strconv.FormatUint(uint64(n), 10))
			}
		case imap.UIDSet:
			nums, _ := all.Nums()
			for _, n := range nums {
				e.raw(" " + strconv.FormatUint(uint64(n), 10))
			}
		}
		if withModSeq && data.Count > 0 {
			e.raw(" (MODSEQ " + strconv.FormatUint(c.sess.searchMod.all, 10) + ")")
		}
		e.crlf()
	}
	if err := c.poll(uid); err != nil {
		return err
	}
	return c.ok(tag, "", "SEARCH completed")
}

var errSearchTooDeep = badSyntax("Search criteria nested too deep")
var errSearchTooLong = badSyntax("Too many search keys")

func (p *searchParser) key(crit *imap.SearchCriteria, depth int) error {
	d := &p.c.dec
	if depth > maxSearchDepth {
		return errSearchTooDeep
	}
	b, err := d.peek()
	if err != nil {
		return err
	}
	if b == '(' {
		d.readByte()
		for {
			if err := p.key(crit, depth+1); err != nil {
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
	if b >= '0' && b <= '9' || b == '*' || b == '$' {
		set, err := d.numSet(false)
		if err != nil {
			return err
		}
		p.keys++
		if p.keys > maxSearchKeys {
			return errSearchTooLong
		}
		if imap.IsSearchRes(set) {
			crit.UID = append(crit.UID, set.(imap.UIDSet))
		} else {
			crit.SeqNum = append(crit.SeqNum, set.(imap.SeqSet))
		}
		return nil
	}
	key, err := d.atom()
	if err != nil {
		return err
	}
	return p.keyNamed(key, crit, depth)
}

func (p *searchParser) date() (time.Time, error) {
	d := &p.c.dec
	if err := d.sp(); err != nil {
		return time.Time{}, err
	}
	s, err := d.astring()
	if err != nil {
		return time.Time{}, err
	}
	t, err := time.Parse("_2-Jan-2006", s)
	if err != nil {
		if t, err = time.Parse("2-Jan-2006", s); err != nil {
			return time.Time{}, badSyntax("Bad date")
		}
	}
	return t, nil
}

func (p *searchParser) arg() (string, error) {
	if err := p.c.dec.sp(); err != nil {
		return "", err
	}
	return p.c.dec.astring()
}

func (p *searchParser) keyNamed(key string, crit *imap.SearchCriteria, depth int) error {
	p.keys++
	if p.keys > maxSearchKeys {
		return errSearchTooLong
	}
	d := &p.c.dec
	flagKeys := map[string]imap.Flag{
		"ANSWERED": imap.FlagAnswered, "DELETED": imap.FlagDeleted, "DRAFT": imap.FlagDraft,
		"FLAGGED": imap.FlagFlagged, "SEEN": imap.FlagSeen,
	}
	notFlagKeys := map[string]imap.Flag{
		"UNANSWERED": imap.FlagAnswered, "UNDELETED": imap.FlagDeleted, "UNDRAFT": imap.FlagDraft,
		"UNFLAGGED": imap.FlagFlagged, "UNSEEN": imap.FlagSeen,
	}
	k := strings.ToUpper(key)
	if f, ok := flagKeys[k]; ok {
		crit.Flag = append(crit.Flag, f)
		return nil
	}
	if f, ok := notFlagKeys[k]; ok {
		crit.NotFlag = append(crit.NotFlag, f)
		return nil
	}
	switch k {
	case "ALL":
	case "NEW":
		crit.NotFlag = append(crit.NotFlag, imap.FlagSeen)
		crit.Flag = append(crit.Flag, "\\Recent")
	case "RECENT":
		crit.Flag = append(crit.Flag, "\\Recent")
	case "OLD":
		crit.NotFlag = append(crit.NotFlag, "\\Recent")
	case "KEYWORD", "UNKEYWORD":
		if err := d.sp(); err != nil {
			return err
		}
		f, err := d.atom()
		if err != nil {
			return err
		}
		if k == "KEYWORD" {
			crit.Flag = append(crit.Flag, imap.Flag(f))
		} else {
			crit.NotFlag = append(crit.NotFlag, imap.Flag(f))
		}
	case "BCC", "CC", "FROM", "SUBJECT", "TO":
		s, err := p.arg()
		if err != nil {
			return err
		}
		crit.Header = append(crit.Header, imap.SearchCriteriaHeaderField{Key: strings.Title(strings.ToLower(k)), Value: s})
	case "HEADER":
		name, err := p.arg()
		if err != nil {
			return err
		}
		s, err := p.arg()
		if err != nil {
			return err
		}
		crit.Header = append(crit.Header, imap.SearchCriteriaHeaderField{Key: name, Value: s})
	case "BODY":
		s, err := p.arg()
		if err != nil {
			return err
		}
		crit.Body = append(crit.Body, s)
	case "TEXT":
		s, err := p.arg()
		if err != nil {
			return err
		}
		crit.Text = append(crit.Text, s)
	case "BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE":
		t, err := p.date()
		if err != nil {
			return err
		}
		switch k {
		case "BEFORE":
			crit.Before = later(crit.Before, t, false)
		case "SINCE":
			crit.Since = later(crit.Since, t, true)
		case "ON":
			crit.Since = later(crit.Since, t, true)
			crit.Before = later(crit.Before, t.AddDate(0, 0, 1), false)
		case "SENTBEFORE":
			crit.SentBefore = later(crit.SentBefore, t, false)
		case "SENTSINCE":
			crit.SentSince = later(crit.SentSince, t, true)
		case "SENTON":
			crit.SentSince = later(crit.SentSince, t, true)
			crit.SentBefore = later(crit.SentBefore, t.AddDate(0, 0, 1), false)
		}
	case "LARGER", "SMALLER":
		if err := d.sp(); err != nil {
			return err
		}
		n, err := d.number64()
		if err != nil {
			return err
		}
		if k == "LARGER" {
			crit.Larger = max(crit.Larger, int64(n))
		} else if crit.Smaller == 0 || int64(n) < crit.Smaller {
			crit.Smaller = int64(n)
		}
	case "UID":
		if err := d.sp(); err != nil {
			return err
		}
		set, err := d.numSet(true)
		if err != nil {
			return err
		}
		crit.UID = append(crit.UID, set.(imap.UIDSet))
	case "NOT":
		if err := d.sp(); err != nil {
			return err
		}
		var sub imap.SearchCriteria
		if err := p.key(&sub, depth+1); err != nil {
			return err
		}
		crit.Not = append(crit.Not, sub)
	case "OR":
		var pair [2]imap.SearchCriteria
		for i := range pair {
			if err := d.sp(); err != nil {
				return err
			}
			if err := p.key(&pair[i], depth+1); err != nil {
				return err
			}
		}
		crit.Or = append(crit.Or, pair)
	case "MODSEQ":
		if err := d.sp(); err != nil {
			return err
		}
		ms := &imap.SearchCriteriaModSeq{}
		if b, _ := d.peek(); b == '"' {
			// entry-name entry-type-req
			if _, err := d.quoted(); err != nil {
				return err
			}
			if err := d.sp(); err != nil {
				return err
			}
			if _, err := d.atom(); err != nil {
				return err
			}
			if err := d.sp(); err != nil {
				return err
			}
		}
		n, err := d.number64()
		if err != nil {
			return err
		}
		ms.ModSeq = n
		crit.ModSeq = ms
	default:
		return badSyntax("Unknown search key %q", key)
	}
	return nil
}

// later narrows a date bound: the later of two SINCE, the earlier of two
// BEFORE.
func later(cur, t time.Time, since bool) time.Time {
	if cur.IsZero() {
		return t
	}
	if since == t.After(cur) {
		return t
	}
	return cur
}

// hasModSeq reports whether criteria use MODSEQ anywhere.
func hasModSeq(c *imap.SearchCriteria) bool {
	if c.ModSeq != nil {
		return true
	}
	for i := range c.Not {
		if hasModSeq(&c.Not[i]) {
			return true
		}
	}
	for i := range c.Or {
		if hasModSeq(&c.Or[i][0]) || hasModSeq(&c.Or[i][1]) {
			return true
		}
	}
	return false
}
