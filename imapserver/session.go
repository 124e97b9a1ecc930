package imapserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
)

// delim is the hierarchy delimiter: um folder names are flat, and a name
// with "/" shows as a child in clients.
const delim = '/'

// session is the state of one IMAP connection. The engine calls its
// methods one at a time on the connection's goroutine.
type session struct {
	srv  *Server
	nc   *netConn
	conn *conn

	ctx context.Context // the server's, carrying src as um source
	// src stands for the session as the Source of its changes and its
	// subscription. um keeps a client's Source for a while after the
	// change (the delete-time \Seen marks of habits.go), so it must not
	// be the session itself, which would keep the whole connection (its
	// view, the renderings it holds) alive after it ends: under imaptest's
	// stress run 2,500 ended connections were live at once that way.
	src       *source
	fails     int
	mailbox   string // voice mailbox, "" until login
	mb        *um.Mailbox
	sel       *view // nil unless a folder is selected
	appendOp  *pendingAppend
	searchRes imap.UIDSet           // saved by SEARCH RETURN (SAVE), used as "$"
	texts     map[*entry]*searchDoc // during SEARCH: the texts read
	modified  imap.NumSet           // STORE UNCHANGEDSINCE: the messages left alone
	searchMod searchModSeqs         // SEARCH MODSEQ: the ModSeqs to answer with
	closed    bool
}

// source is a session's um source (session.src): a value of its own, of
// non-zero size so that no two are the same pointer.
type source struct{ _ byte }

// guard runs at the top of every session method but Close: it marks the
// connection busy (so Shutdown waits for the command), turns a panic into
// NO [SERVERBUG], so none reaches the host, and passes the method's error
// through sessionError, so the engine gets an *imap.Error.
func (sess *session) guard(err *error) func() {
	sess.nc.busy.Add(1)
	return func() {
		sess.nc.busy.Add(-1)
		if v := recover(); v != nil {
			sess.srv.logger().Error("imapserver: panic", "mailbox", sess.mailbox, "panic", v, "stack", string(debug.Stack()))
			*err = errServerBug()
			return
		}
		*err = sess.sessionError(*err)
	}
}

func (sess *session) Close() error {
	if sess.closed {
		return nil
	}
	sess.closed = true
	if sess.sel != nil {
		sess.sel.close()
		sess.sel = nil
	}
	if sess.appendOp != nil {
		sess.appendOp.discard()
		sess.appendOp = nil
	}
	if sess.mb != nil {
		sess.srv.releaseUser(sess.mailbox)
		sess.mb = nil
	}
	return nil
}

func (sess *session) Login(username, password string) (err error) {
	defer sess.guard(&err)()
	if sess.fails >= maxLoginFailuresPerConn {
		return errAuthFailed
	}
	ctx, cancel := context.WithTimeout(sess.ctx, 30*time.Second)
	defer cancel()
	unlock, err := sess.srv.lockAccount(ctx, username)
	if err != nil {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Login attempts for this account are queued; try again later"}
	}
	defer unlock()
	mailbox, aerr := sess.srv.opts.Authenticate(ctx, username, password)
	var mb *um.Mailbox
	if aerr == nil {
		mb, aerr = sess.srv.svc.Mailbox(ctx, mailbox)
		if aerr != nil {
			aerr = fmt.Errorf("mailbox %q of user %q: %w", mailbox, username, aerr)
		}
	}
	if aerr != nil {
		sess.srv.logger().Debug("imapserver: login failed", "user", username, "remote", sess.nc.ip, "err", aerr)
		sess.fails++
		sess.srv.sleep(sess.ctx, sess.srv.loginFailed(sess.nc.peer, username))
		if sess.fails >= maxLoginFailuresPerConn {
			sess.nc.closeAfterResponse()
		}
		return errAuthFailed
	}
	if !sess.srv.claimUser(mailbox) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeLimit, Text: "Too many sessions for this mailbox"}
	}
	sess.mailbox, sess.mb = mailbox, mb
	sess.nc.loggedIn()
	return nil
}

// folderName turns a client's folder name into the stored one.
func folderName(name string) string {
	name = strings.TrimSuffix(name, string(delim))
	return um.CanonicalFolder(name)
}

func (sess *session) folders() ([]um.Folder, error) {
	fs, err := sess.mb.Folders(sess.ctx)
	return fs, sess.srv.imapError(err, roleSource)
}

func (sess *session) Create(name string, options *imap.CreateOptions) (err error) {
	defer sess.guard(&err)()
	name = folderName(name)
	if len(options.SpecialUse) > 0 {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCode("USEATTR"), Text: "Special-use folders are fixed"}
	}
	_, err = sess.mb.CreateFolder(sess.ctx, name)
	return sess.srv.imapError(err, roleSource)
}

func (sess *session) Delete(name string) (err error) {
	defer sess.guard(&err)()
	name = folderName(name)
	if sess.sel != nil && !sess.sel.dead && sess.sel.folder == name {
		return errCannot("Folder is selected")
	}
	if err := sess.mb.DeleteFolder(sess.ctx, name); err != nil {
		return sess.srv.imapError(err, roleSource)
	}
	sess.srv.recent.forget(sess.mailbox, name)
	return nil
}

func (sess *session) Rename(from, to string, options *imap.RenameOptions) (err error) {
	defer sess.guard(&err)()
	from, to = folderName(from), folderName(to)
	if from == um.Inbox {
		// RFC 3501 makes RENAME INBOX move its messages; INBOX belongs to
		// the phone here.
		return errCannot("INBOX cannot be renamed")
	}
	// RFC 3501 6.3.5: the folder's children move with it. um renames one
	// folder at a time, so they follow, each under its new name.
	fs, err := sess.mb.Folders(sess.ctx)
	if err != nil {
		return sess.srv.imapError(err, roleSource)
	}
	var children []string
	found := false
	for _, f := range fs {
		switch {
		case f.Name == from:
			found = true
		case strings.HasPrefix(f.Name, from+string(delim)):
			children = append(children, f.Name)
		case f.Name == to || strings.HasPrefix(f.Name, to+string(delim)):
			return sess.srv.imapError(um.ErrExists, roleSource)
		}
	}
	if strings.HasPrefix(to, from+string(delim)) {
		return errCannot("A folder cannot move below itself")
	}
	if !found && len(children) == 0 {
		return sess.srv.imapError(um.ErrNotFound, roleSource)
	}
	moves := [][2]string{}
	if found {
		moves = append(moves, [2]string{from, to})
	}
	for _, c := range children {
		moves = append(moves, [2]string{c, to + strings.TrimPrefix(c, from)})
	}
	for _, mv := range moves {
		if err := sess.mb.RenameFolder(sess.ctx, mv[0], mv[1]); err != nil {
			return sess.srv.imapError(err, roleSource)
		}
		sess.srv.recent.rename(sess.mailbox, mv[0], mv[1])
		if sess.sel != nil && !sess.sel.dead && sess.sel.folder == mv[0] {
			sess.sel.folder = mv[1]
		}
	}
	return nil
}

func (sess *session) Namespace() (data *imap.NamespaceData, err error) {
	defer sess.guard(&err)()
	return &imap.NamespaceData{
		Personal: []imap.NamespaceDescriptor{{Prefix: "", Delim: delim}},
	}, nil
}

func (sess *session) AppendLimit() uint32 { return sess.srv.opts.AppendLimit }

func specialUse(folder string) []imap.MailboxAttr {
	if folder == um.Trash {
		return []imap.MailboxAttr{imap.MailboxAttrTrash}
	}
	return nil
}

func (sess *session) Status(name string, options *imap.StatusOptions) (data *imap.StatusData, err error) {
	defer sess.guard(&err)()
	return sess.status(folderName(name), options)
}

// status always fills every count go-imap may dereference.
func (sess *session) status(folder string, options *imap.StatusOptions) (*imap.StatusData, error) {
	f, err := sess.mb.Folder(sess.ctx, folder)
	if err != nil {
		return nil, sess.srv.imapError(err, roleSource)
	}
	var msgs []um.Message
	if options.NumMessages || options.NumUnseen || options.NumDeleted || options.Size || options.DeletedStorage ||
		(options.NumRecent && sess.recentNeedsList(f)) {
		if msgs, err = sess.mb.List(sess.ctx, folder); err != nil {
			return nil, sess.srv.imapError(err, roleSource)
		}
	}
	var unseen, deleted, recent uint32
	var size, deletedSize int64
	for i := range msgs {
		m := &msgs[i]
		if !m.Flags.Has(um.FlagHeard) {
			unseen++
		}
		if options.Size || options.DeletedStorage {
			sz := sess.srv.cache.size(m, sess.mailbox, sess.srv.render)
			size += sz
			if m.Flags.Has(um.FlagDeleted) {
				deletedSize += sz
			}
		}
		if m.Flags.Has(um.FlagDeleted) {
			deleted++
		}
	}
	if options.NumRecent {
		recent = sess.statusRecent(f, msgs)
	}
	n := uint32(len(msgs))
	limit := sess.srv.opts.AppendLimit
	return &imap.StatusData{
		Mailbox:        f.Name,
		NumMessages:    &n,
		UIDNext:        imap.UID(f.UIDNext),
		UIDValidity:    f.UIDValidity,
		NumUnseen:      &unseen,
		NumDeleted:     &deleted,
		Size:           &size,
		AppendLimit:    &limit,
		DeletedStorage: &deletedSize,
		NumRecent:      &recent,
		HighestModSeq:  f.HighestModSeq,
	}, nil
}

// pendingAppend is a message a client APPENDed, held until the engine has
// read the CRLF that ends the command: storing before would keep a message
// whose command was malformed and never confirmed. So Append only spools
// the literal, and finishAppend stores it.
type pendingAppend struct {
	folder string
	tmpl   um.Message
	spool  spool    // content when small
	buf    []byte   // content when small and rewritten (toSevenBit)
	file   *os.File // content when large
	data   *imap.AppendData
}

func (p *pendingAppend) content() (io.Reader, error) {
	if p.buf != nil {
		return bytes.NewReader(p.buf), nil
	}
	if p.file == nil {
		return p.spool.reader(), nil
	}
	if _, err := p.file.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return p.file, nil
}

func (p *pendingAppend) discard() {
	if p.file != nil {
		p.file.Close()
		os.Remove(p.file.Name())
		p.file = nil
	}
	p.spool.release()
	p.buf = nil
}

const spoolInMemory = 1 << 20

// appendCheck answers, before the message is sent, whether APPEND to
// name with flags can go on: the folder must exist, and take the keywords
// (admitKeywords). What a folder may hold (INBOX takes voicemail only) is
// um's rule, applied when the message is stored.
func (sess *session) appendCheck(name string, flags []imap.Flag) (err error) {
	defer sess.guard(&err)()
	folder := folderName(name)
	if _, err := sess.mb.Folder(sess.ctx, folder); err != nil {
		return sess.srv.imapError(err, roleDest)
	}
	if _, kw := flagsFromIMAP(flags); len(kw) > 0 {
		have, err := sess.folderKeywords(folder)
		if err == nil {
			err = admitKeywords(kw, have, nil)
		}
		return sess.srv.imapError(err, roleDest)
	}
	return nil
}

// Append spools an APPEND's message of size bytes from r; finishAppend
// stores it once the command's end has been read. The engine drains r
// whatever Append returns.
func (sess *session) Append(name string, r io.Reader, size int64, options *imap.AppendOptions) (err error) {
	defer sess.guard(&err)()
	if sess.appendOp != nil {
		sess.appendOp.discard()
		sess.appendOp = nil
	}
	folder := folderName(name)
	tmpl := um.Message{Added: options.Time}
	tmpl.Flags, tmpl.Keywords = flagsFromIMAP(options.Flags)
	p := &pendingAppend{folder: folder, tmpl: tmpl, data: &imap.AppendData{}}
	if size <= spoolInMemory {
		if err := p.spool.readFull(r, int(size)); err != nil {
			p.discard()
			return fmt.Errorf("imapserver: read APPEND literal: %w", err)
		}
		if p.spool.hasNUL() { // rare: rewritten whole, see toSevenBit
			p.buf = toSevenBit(p.spool.bytes())
			p.spool.release()
		}
	} else {
		f, err := os.CreateTemp("", "um-imap-append-*")
		if err != nil {
			return sess.srv.imapError(fmt.Errorf("imapserver: spool APPEND: %w", err), roleSource)
		}
		p.file = f
		if _, err := io.Copy(f, r); err != nil {
			p.discard()
			return fmt.Errorf("imapserver: read APPEND literal: %w", err)
		}
	}
	sess.appendOp = p
	return nil
}

// finishAppend stores the spooled APPEND.
func (sess *session) finishAppend() (data *imap.AppendData, err error) {
	defer sess.guard(&err)()
	p := sess.appendOp
	if p == nil {
		return nil, errServerBug()
	}
	sess.appendOp = nil
	defer p.discard()
	r, err := p.content()
	if err != nil {
		return nil, sess.srv.imapError(err, roleSource)
	}
	m, err := sess.mb.Append(sess.ctx, p.folder, p.tmpl, r)
	if err != nil {
		return nil, sess.srv.imapError(err, roleDest)
	}
	f, err := sess.mb.Folder(sess.ctx, p.folder)
	if err != nil {
		return nil, sess.srv.imapError(err, roleDest)
	}
	p.data.UID = imap.UID(m.UID)
	p.data.UIDValidity = f.UIDValidity
	if sess.sel != nil {
		sess.addOwn(sess.sel, f, []um.Message{m})
	}
	return p.data, nil
}

// flagsFromIMAP splits IMAP flags into um system flags and keywords;
// \Recent and other system flags um does not keep are dropped.
func flagsFromIMAP(flags []imap.Flag) (um.Flags, []string) {
	var f um.Flags
	var kw []string
	for _, fl := range flags {
		if sf, ok := um.ParseFlag(string(fl)); ok {
			f |= sf
			continue
		}
		if strings.HasPrefix(string(fl), `\`) {
			continue
		}
		kw = append(kw, string(fl))
	}
	return f, kw
}

// flagsToIMAP lists a message's flags and keywords, with \Recent when
// recent is set.
func flagsToIMAP(m *um.Message, recent bool) []imap.Flag {
	names := m.Flags.IMAPNames()
	n := len(names) + len(m.Keywords)
	if recent {
		if n == 0 {
			return onlyRecent
		}
		n++
	}
	out := make([]imap.Flag, 0, n)
	for _, n := range names {
		out = append(out, imap.Flag(n))
	}
	if recent {
		out = append(out, flagRecent)
	}
	for _, k := range m.Keywords {
		out = append(out, imap.Flag(k))
	}
	return out
}

// onlyRecent is the flags of a recent message that has no other, shared
// so that a flag sync of new messages allocates nothing for them. It is
// never changed.
var onlyRecent = []imap.Flag{flagRecent}

var systemFlags = []imap.Flag{imap.FlagSeen, imap.FlagAnswered, imap.FlagFlagged, imap.FlagDeleted, imap.FlagDraft}

func mailboxFlags(keywords map[string]bool) []imap.Flag {
	out := append([]imap.Flag(nil), systemFlags...)
	kw := make([]string, 0, len(keywords))
	for k := range keywords {
		kw = append(kw, k)
	}
	sort.Strings(kw)
	for _, k := range kw {
		out = append(out, imap.Flag(k))
	}
	return out
}

var errNotSelected = errors.New("imapserver: no folder selected")
