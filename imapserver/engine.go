package imapserver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
)

// connState is where a connection is in RFC 3501's state diagram.
type connState uint8

const (
	stateNotAuth connState = iota
	stateAuth
	stateSelected
)

// conn is one client connection: the engine's reader, writer and the
// session it runs commands on. Everything but the IDLE reader runs on the
// connection's goroutine.
type conn struct {
	srv   *Server
	nc    *netConn
	c     net.Conn // nc, or TLS over it
	isTLS bool
	br    *bufio.Reader // nil while waiting in awaitInput (idle.go)
	bw    *bufio.Writer // nil while waiting in awaitInput
	in    input         // what br reads
	ahead [16]byte      // what awaitInput read ahead
	enc   encoder
	dec   decoder
	sess  *session
	state connState
	// durable holds the durability of the changes the connection's
	// commands made: out waits for it before any byte reaches the client.
	durable um.Durability

	ctx    context.Context // cancelled when the connection ends
	cancel context.CancelFunc

	parsed    bool // the current command's line has been read to its end
	rev2      bool // ENABLE IMAP4rev2
	condstore bool
	qresync   bool
}

const (
	bufSize = 4096
	// tlsSniffWait is how long a plain connection's greeting waits for a
	// client that speaks first, which only a TLS client does: one sends its
	// ClientHello right after connecting.
	tlsSniffWait = 50 * time.Millisecond
	// tlsHandshakeRecord is the first byte of a TLS ClientHello.
	tlsHandshakeRecord = 0x16
)

// prefixConn is a netConn with bytes read ahead of the engine put back
// in front.
type prefixConn struct {
	*netConn
	in input // the bytes, then netConn
}

func (p *prefixConn) Read(b []byte) (int, error) { return p.in.Read(b) }

func (s *Server) serveConn(nc *netConn, implicitTLS bool) {
	c := &conn{srv: s, nc: nc, c: nc}
	c.ctx, c.cancel = context.WithCancel(s.ctx)
	defer c.cancel()
	defer nc.Close()
	if !implicitTLS && s.tlsConf != nil {
		// A client that starts with a TLS ClientHello on the STARTTLS port
		// (Thunderbird fetching the certificate for a security exception)
		// is served implicit TLS.
		var first [1]byte
		nc.Conn.SetReadDeadline(time.Now().Add(tlsSniffWait))
		n, err := nc.Conn.Read(first[:])
		nc.SetReadDeadline(time.Time{}) // back to the login deadline
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) {
			return
		}
		if n == 1 {
			c.c = &prefixConn{netConn: nc, in: input{r: nc, pre: first[:]}}
			implicitTLS = first[0] == tlsHandshakeRecord
		}
	}
	if implicitTLS {
		c.c, c.isTLS = tls.Server(c.c, s.tlsConf), true
	}
	c.dec = decoder{cont: c.continuation, maxLiteral: maxPreLoginLiteral}
	c.takeBuffers()
	defer c.releaseBuffers()
	c.sess = &session{srv: s, nc: nc, conn: c, src: new(source)}
	c.sess.ctx = um.WithDurability(um.WithSource(c.ctx, c.sess.src), &c.durable)
	defer c.sess.Close()
	nc.setEngine(c)
	c.enc.raw("* OK [CAPABILITY " + c.capabilities() + "] um IMAP ready\r\n")
	c.serve()
}

// lineBuffered reports whether a whole line of the client's is buffered:
// the next command can run without waiting for the client, which may be
// waiting for this one's response.
func (c *conn) lineBuffered() bool {
	b, _ := c.br.Peek(c.br.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// out is the writer beneath the connection's bufio.Writer.
func (c *conn) out() io.Writer { return (*gate)(c) }

// gate writes to the client once every change the connection's commands
// made is durable, so that no response (a tagged OK, or anything after it)
// tells of a change a power loss could still undo. When the store cannot
// make one durable, the connection ends without it: the client sees a
// dropped connection, as after a crash, never an OK.
type gate conn

func (g *gate) Write(p []byte) (int, error) {
	c := (*conn)(g)
	if c.durable.Pending() {
		if err := c.durable.Wait(c.ctx); err != nil {
			if c.ctx.Err() == nil {
				c.srv.logger().Error("imapserver: a change was not made durable; dropping the connection", "remote", c.nc.ip, "err", err)
			}
			c.c.Close()
			return 0, err
		}
	}
	return c.c.Write(p)
}

func (c *conn) continuation() error {
	c.enc.raw("+ Ready\r\n")
	return c.bw.Flush()
}

// serve runs commands until the connection ends. Each command's responses
// go out when it ends, unless a change it or an earlier one made is still
// not durable and the client has pipelined more commands: those run first,
// and the responses go out together once the changes are durable (gate),
// so a store that applies a change before it is durable lets the pipeline
// share one sync instead of waiting for one each.
func (c *conn) serve() {
	for {
		if !c.lineBuffered() || !c.durable.Pending() {
			if err := c.bw.Flush(); err != nil {
				return
			}
		}
		c.nc.SetReadDeadline(time.Now().Add(c.srv.opts.IdleTimeout))
		err := c.awaitInput()
		if err == nil {
			err = c.command()
		}
		if err == nil {
			continue
		}
		var pe *protoError
		switch {
		case errors.Is(err, errLogout):
			c.bw.Flush()
			return
		case errors.Is(err, errShutdown):
			c.enc.raw("* BYE Server shutting down\r\n")
			c.bw.Flush()
			return
		case errors.As(err, &pe) && pe.fatal:
			c.enc.raw("* BYE " + pe.text + "\r\n")
			c.bw.Flush()
			c.srv.logger().Debug("imapserver: connection closed", "remote", c.nc.ip, "reason", pe.text)
			return
		default:
			var ne net.Error
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, errPreLoginBudget) && !(errors.As(err, &ne) && ne.Timeout()) {
				c.srv.logger().Debug("imapserver: connection failed", "remote", c.nc.ip, "err", err)
			}
			return
		}
	}
}

var errLogout = errors.New("imapserver: logout")

// command reads and runs one command. It returns nil when the connection
// goes on, whatever the command's outcome.
func (c *conn) command() (err error) {
	c.dec.start()
	if c.state == stateNotAuth {
		c.dec.maxLiteral = maxPreLoginLiteral
	} else {
		c.dec.maxLiteral = maxStringLiteral
	}
	tag, err := c.dec.token(isTagChar, "tag")
	if err != nil {
		return c.untaggedBad(err)
	}
	c.nc.busy.Add(1)
	defer c.nc.busy.Add(-1)
	name := ""
	if err = c.dec.sp(); err == nil {
		name, err = c.dec.atom()
	}
	name = strings.ToUpper(name)
	if err == nil && name == "UID" {
		var sub string
		if err = c.dec.sp(); err == nil {
			sub, err = c.dec.atom()
		}
		name = "UID " + strings.ToUpper(sub)
	}
	if err == nil {
		err = c.dispatchSafe(tag, name)
	}
	c.srv.countCommand(name, err)
	return c.finish(tag, err)
}

// untaggedBad answers input that has no tag.
func (c *conn) untaggedBad(err error) error {
	var pe *protoError
	if !errors.As(err, &pe) {
		return err
	}
	c.enc.raw("* BAD " + pe.text + "\r\n")
	if pe.fatal {
		return pe
	}
	return c.dec.skipLine()
}

// finish sends the tagged response for err and, after a refused command,
// skips what is left of it.
func (c *conn) finish(tag string, err error) error {
	if err == nil {
		return nil
	}
	var pe *protoError
	var ie *imap.Error
	switch {
	case errors.Is(err, errLogout), errors.Is(err, errShutdown):
		return err
	case errors.As(err, &pe):
		c.status(tag, pe.typ, pe.code, pe.text)
		if pe.fatal {
			return pe
		}
		if c.parsed {
			return nil
		}
		return c.dec.skipLine()
	case errors.As(err, &ie):
		if ie.Type == imap.StatusResponseTypeBye {
			c.status("*", ie.Type, ie.Code, ie.Text)
			return errLogout
		}
		c.status(tag, ie.Type, ie.Code, ie.Text)
		if c.parsed {
			return nil
		}
		return c.dec.skipLine()
	}
	return err
}

// status writes a status response.
func (c *conn) status(tag string, typ imap.StatusResponseType, code imap.ResponseCode, text string) {
	c.enc.raw(tag + " " + string(typ) + " ")
	if code != "" {
		c.enc.raw("[" + string(code) + "] ")
	}
	if text == "" {
		text = string(typ)
	}
	c.enc.raw(text + "\r\n")
}

func (c *conn) ok(tag, code, text string) error {
	c.status(tag, imap.StatusResponseTypeOK, imap.ResponseCode(code), text)
	return nil
}

func (c *conn) dispatchSafe(tag, name string) (err error) {
	c.parsed = false
	defer func() {
		if v := recover(); v != nil {
			c.srv.logger().Error("imapserver: panic", "mailbox", c.sess.mailbox, "command", name, "panic", v, "stack", string(debug.Stack()))
			err = errServerBug()
		}
	}()
	return c.dispatch(tag, name)
}

// end reads the end of the command's line: after it the command may run
// and nothing more of it is to be skipped.
func (c *conn) end() error {
	if err := c.dec.crlf(); err != nil {
		return err
	}
	c.parsed = true
	c.dec.lastLiteral = nil
	return nil
}

func (c *conn) needAuth() error {
	switch c.state {
	case stateNotAuth:
		return badSyntax("Log in first")
	}
	return nil
}

func (c *conn) needSelected() error {
	if c.state != stateSelected {
		return badSyntax("No folder selected")
	}
	return nil
}

func (c *conn) dispatch(tag, name string) error {
	switch name {
	case "CAPABILITY":
		if err := c.end(); err != nil {
			return err
		}
		c.enc.raw("* CAPABILITY " + c.capabilities() + "\r\n")
		return c.ok(tag, "", "CAPABILITY completed")
	case "NOOP", "CHECK":
		if err := c.end(); err != nil {
			return err
		}
		if name == "CHECK" {
			if err := c.needSelected(); err != nil {
				return err
			}
		}
		if err := c.poll(true); err != nil {
			return err
		}
		return c.ok(tag, "", name+" completed")
	case "LOGOUT":
		if err := c.end(); err != nil {
			return err
		}
		c.enc.raw("* BYE Logging out\r\n")
		c.ok(tag, "", "LOGOUT completed")
		return errLogout
	case "ID":
		return c.cmdID(tag)
	case "STARTTLS":
		return c.cmdStartTLS(tag)
	case "LOGIN":
		return c.cmdLogin(tag)
	case "AUTHENTICATE":
		return c.cmdAuthenticate(tag)
	}
	if c.state == stateNotAuth {
		return badSyntax("Log in first")
	}
	switch name {
	case "ENABLE":
		return c.cmdEnable(tag)
	case "SELECT", "EXAMINE":
		return c.cmdSelect(tag, name == "EXAMINE")
	case "CREATE":
		return c.cmdCreate(tag)
	case "DELETE":
		return c.cmdFolder(tag, "DELETE", c.sess.Delete)
	case "SUBSCRIBE":
		return c.cmdFolder(tag, "SUBSCRIBE", c.sess.Subscribe)
	case "UNSUBSCRIBE":
		return c.cmdFolder(tag, "UNSUBSCRIBE", c.sess.Unsubscribe)
	case "RENAME":
		return c.cmdRename(tag)
	case "LIST", "LSUB":
		return c.cmdList(tag, name == "LSUB")
	case "NAMESPACE":
		if err := c.end(); err != nil {
			return err
		}
		c.enc.raw(`* NAMESPACE (("" "/")) NIL NIL` + "\r\n")
		return c.ok(tag, "", "NAMESPACE completed")
	case "STATUS":
		return c.cmdStatus(tag)
	case "APPEND":
		return c.cmdAppend(tag)
	case "IDLE":
		return c.cmdIdle(tag)
	case "GETQUOTAROOT", "GETQUOTA":
		return c.cmdQuota(tag, name == "GETQUOTAROOT")
	case "SETQUOTA":
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNoPerm, Text: "Quotas are set by the PBX"}
	}
	if c.state != stateSelected {
		switch name {
		case "CLOSE", "UNSELECT", "EXPUNGE", "UID EXPUNGE", "SEARCH", "UID SEARCH", "FETCH", "UID FETCH",
			"STORE", "UID STORE", "COPY", "UID COPY", "MOVE", "UID MOVE":
			return badSyntax("No folder selected")
		}
		return badSyntax("Unknown command")
	}
	switch name {
	case "CLOSE", "UNSELECT":
		if err := c.end(); err != nil {
			return err
		}
		if name == "CLOSE" {
			if err := c.sess.Expunge(&respWriter{c: c, silent: true}, nil); err != nil {
				return err
			}
		}
		if err := c.sess.Unselect(); err != nil {
			return err
		}
		c.state = stateAuth
		return c.ok(tag, "", name+" completed")
	case "EXPUNGE", "UID EXPUNGE":
		var uids *imap.UIDSet
		if name == "UID EXPUNGE" {
			if err := c.dec.sp(); err != nil {
				return err
			}
			set, err := c.dec.numSet(true)
			if err != nil {
				return err
			}
			u, ok := set.(imap.UIDSet)
			if !ok {
				u = c.sess.searchRes
			}
			uids = &u
		}
		if err := c.end(); err != nil {
			return err
		}
		if err := c.sess.Expunge(&respWriter{c: c}, uids); err != nil {
			return err
		}
		if err := c.poll(true); err != nil {
			return err
		}
		return c.ok(tag, "", name+" completed")
	case "SEARCH", "UID SEARCH":
		return c.cmdSearch(tag, name == "UID SEARCH")
	case "FETCH", "UID FETCH":
		return c.cmdFetch(tag, name == "UID FETCH")
	case "STORE", "UID STORE":
		return c.cmdStore(tag, name == "UID STORE")
	case "COPY", "UID COPY", "MOVE", "UID MOVE":
		return c.cmdCopy(tag, strings.HasPrefix(name, "UID "), strings.HasSuffix(name, "MOVE"))
	}
	return badSyntax("Unknown command")
}

// capabilities lists what the connection may use now.
func (c *conn) capabilities() string {
	caps := []string{"IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE"}
	if c.state == stateNotAuth {
		if !c.isTLS && c.srv.tlsConf != nil {
			caps = append(caps, "STARTTLS")
		}
		if c.loginAllowed() {
			caps = append(caps, "AUTH=PLAIN")
		} else {
			caps = append(caps, "LOGINDISABLED")
		}
		return strings.Join(caps, " ")
	}
	if c.srv.modSeqs != nil {
		caps = append(caps, "CONDSTORE", "QRESYNC")
	}
	caps = append(caps, "NAMESPACE", "UIDPLUS", "ESEARCH", "SEARCHRES", "MOVE", "SPECIAL-USE", "UNSELECT",
		"LIST-EXTENDED", "LIST-STATUS", "STATUS=SIZE", "CHILDREN", "BINARY", "QUOTA", "QUOTA=RES-MESSAGE", "QUOTA=RES-STORAGE",
		fmt.Sprintf("APPENDLIMIT=%d", c.srv.opts.AppendLimit))
	return strings.Join(caps, " ")
}

func (c *conn) loginAllowed() bool { return c.isTLS || c.srv.opts.InsecureAuth }

// poll tells the client what changed in its selected folder.
func (c *conn) poll(allowExpunge bool) error {
	if c.state != stateSelected {
		return nil
	}
	return c.sess.Poll(&respWriter{c: c}, allowExpunge)
}

func (c *conn) cmdID(tag string) error {
	if err := c.dec.sp(); err != nil {
		return err
	}
	if !c.dec.accept('(') {
		if _, err := c.dec.atom(); err != nil { // NIL
			return err
		}
	} else {
		c.dec.unread()
		n := 0
		err := c.dec.list(func() error {
			n++
			if n > 60 {
				return badSyntax("Too many ID fields")
			}
			b, err := c.dec.peek()
			if err != nil {
				return err
			}
			if b == 'N' || b == 'n' {
				_, err = c.dec.atom()
				return err
			}
			_, err = c.dec.str()
			return err
		})
		if err != nil {
			return err
		}
	}
	if err := c.end(); err != nil {
		return err
	}
	c.enc.raw(`* ID ("name" "um")` + "\r\n")
	return c.ok(tag, "", "ID completed")
}

func (c *conn) cmdStartTLS(tag string) error {
	if err := c.end(); err != nil {
		return err
	}
	if c.isTLS || c.srv.tlsConf == nil {
		return badSyntax("TLS is not available")
	}
	if c.state != stateNotAuth {
		return badSyntax("STARTTLS after login")
	}
	c.ok(tag, "", "Begin TLS negotiation now")
	if err := c.bw.Flush(); err != nil {
		return err
	}
	tc := tls.Server(c.nc, c.srv.tlsConf)
	if err := tc.HandshakeContext(c.ctx); err != nil {
		c.srv.logger().Debug("imapserver: STARTTLS handshake", "remote", c.nc.ip, "err", err)
		return errLogout
	}
	c.c, c.isTLS = tc, true
	// Reset drops what the client sent after STARTTLS in plain text: it
	// must not run as if it had come under TLS.
	c.in = input{r: tc}
	c.br.Reset(&c.in)
	c.bw.Reset(c.out())
	return nil
}

func (c *conn) cmdLogin(tag string) error {
	a := c.args()
	user := a.sp().astring()
	pass := a.sp().astring()
	if err := a.end(); err != nil {
		return err
	}
	return c.login(tag, user, pass)
}

func (c *conn) login(tag, user, pass string) error {
	if c.state != stateNotAuth {
		return badSyntax("Logged in already")
	}
	if !c.loginAllowed() {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodePrivacyRequired, Text: "TLS is required to log in"}
	}
	if err := c.sess.Login(user, pass); err != nil {
		return err
	}
	c.state = stateAuth
	return c.ok(tag, "CAPABILITY "+c.capabilities(), "Logged in")
}

func (c *conn) cmdAuthenticate(tag string) error {
	var mech, ir string
	err := c.dec.sp()
	if err == nil {
		mech, err = c.dec.atom()
	}
	if err == nil && c.dec.accept(' ') {
		ir, err = c.dec.token(func(b byte) bool { return isAtomChar(b) || b == '=' }, "initial response")
	}
	if err == nil {
		err = c.end()
	}
	if err != nil {
		return err
	}
	if !strings.EqualFold(mech, "PLAIN") {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Text: "Unsupported authentication mechanism"}
	}
	if c.state != stateNotAuth {
		return badSyntax("Logged in already")
	}
	if !c.loginAllowed() {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodePrivacyRequired, Text: "TLS is required to log in"}
	}
	if ir == "" {
		c.enc.raw("+ \r\n")
		if err := c.bw.Flush(); err != nil {
			return err
		}
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return errLineTooLong
			}
			return err
		}
		ir = strings.TrimRight(string(line), "\r\n")
	}
	if ir == "*" {
		return &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Authentication cancelled"}
	}
	if ir == "=" {
		ir = ""
	}
	raw, err := base64.StdEncoding.DecodeString(ir)
	if err != nil {
		return &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Bad base64"}
	}
	parts := strings.Split(string(raw), "\x00")
	if len(parts) != 3 || (parts[0] != "" && parts[0] != parts[1]) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed, Text: "Bad PLAIN credentials"}
	}
	return c.login(tag, parts[1], parts[2])
}

func (c *conn) cmdEnable(tag string) error {
	var enabled []string
	for c.dec.accept(' ') {
		a, err := c.dec.atom()
		if err != nil {
			return err
		}
		switch strings.ToUpper(a) {
		case "IMAP4REV2":
			if !c.rev2 {
				c.rev2 = true
				enabled = append(enabled, "IMAP4rev2")
			}
		case "CONDSTORE":
			if c.srv.modSeqs != nil && !c.condstore {
				c.enableCondstore()
				enabled = append(enabled, "CONDSTORE")
			}
		case "QRESYNC":
			if c.srv.modSeqs != nil && !c.qresync {
				if !c.condstore {
					c.enableCondstore()
				}
				c.qresync = true
				enabled = append(enabled, "QRESYNC")
			}
		}
	}
	if err := c.end(); err != nil {
		return err
	}
	c.enc.raw("* ENABLED")
	for _, e := range enabled {
		c.enc.raw(" " + e)
	}
	c.enc.crlf()
	return c.ok(tag, "", "ENABLE completed")
}

func (c *conn) cmdSelect(tag string, readOnly bool) error {
	var name string
	err := c.dec.sp()
	if err == nil {
		name, err = c.dec.mailbox()
	}
	var qr *qresyncParams
	condstore := false
	if err == nil && c.dec.accept(' ') {
		err = c.dec.atoms(func(a string) error {
			switch a {
			case "CONDSTORE":
				condstore = true
				return nil
			case "QRESYNC":
				qr = &qresyncParams{}
				if err := c.dec.sp(); err != nil {
					return err
				}
				return c.qresyncParams(qr)
			}
			return badSyntax("Unknown SELECT parameter")
		})
	}
	if err == nil {
		err = c.end()
	}
	if err != nil {
		return err
	}
	if c.state == stateSelected {
		c.state = stateAuth
		c.sess.Unselect()
		c.enc.raw("* OK [CLOSED] Previous folder closed\r\n")
	}
	if qr != nil && !c.qresync {
		return badSyntax("QRESYNC is not enabled")
	}
	if condstore && c.srv.modSeqs == nil {
		return badSyntax("CONDSTORE is not supported")
	}
	data, err := c.sess.Select(name, &imap.SelectOptions{ReadOnly: readOnly})
	if err != nil {
		return err
	}
	if condstore {
		c.condstore = true
	}
	c.state = stateSelected
	e := &c.enc
	e.raw("* FLAGS ")
	e.flags(data.Flags)
	e.crlf()
	if data.PermanentFlags != nil {
		e.raw("* OK [PERMANENTFLAGS ")
		e.flags(data.PermanentFlags)
		e.raw("] Flags permitted\r\n")
	} else {
		e.raw("* OK [PERMANENTFLAGS ()] Read-only folder\r\n")
	}
	e.raw(fmt.Sprintf("* %d EXISTS\r\n", data.NumMessages))
	if !c.rev2 {
		e.raw(fmt.Sprintf("* %d RECENT\r\n", data.NumRecent))
		if data.FirstUnseenSeqNum > 0 {
			e.raw(fmt.Sprintf("* OK [UNSEEN %d] First unseen\r\n", data.FirstUnseenSeqNum))
		}
	}
	e.raw(fmt.Sprintf("* OK [UIDVALIDITY %d] UIDs valid\r\n", data.UIDValidity))
	e.raw(fmt.Sprintf("* OK [UIDNEXT %d] Predicted next UID\r\n", data.UIDNext))
	if c.srv.modSeqs != nil {
		e.raw(fmt.Sprintf("* OK [HIGHESTMODSEQ %d] Highest\r\n", c.sess.sel.highestModSeq))
	}
	if qr != nil {
		if err := c.qresyncSelect(qr); err != nil {
			return err
		}
	}
	if data.List != nil && c.rev2 {
		c.writeList(data.List)
	}
	if readOnly {
		return c.ok(tag, "READ-ONLY", "EXAMINE completed")
	}
	return c.ok(tag, "READ-WRITE", "SELECT completed")
}

func (c *conn) cmdCreate(tag string) error {
	var name string
	err := c.dec.sp()
	if err == nil {
		name, err = c.dec.mailbox()
	}
	opts := &imap.CreateOptions{}
	if err == nil && c.dec.accept(' ') {
		// (USE (\Trash ...))
		err = c.dec.atoms(func(a string) error {
			if a != "USE" {
				return badSyntax("Unknown CREATE parameter")
			}
			if err := c.dec.sp(); err != nil {
				return err
			}
			return c.dec.list(func() error {
				f, err := c.dec.flag()
				opts.SpecialUse = append(opts.SpecialUse, imap.MailboxAttr(f))
				return err
			})
		})
	}
	if err == nil {
		err = c.end()
	}
	if err != nil {
		return err
	}
	if err := c.sess.Create(name, opts); err != nil {
		return err
	}
	return c.ok(tag, "", "CREATE completed")
}

func (c *conn) cmdFolder(tag, name string, run func(string) error) error {
	a := c.args()
	folder := a.sp().mailbox()
	if err := a.end(); err != nil {
		return err
	}
	if err := run(folder); err != nil {
		return err
	}
	return c.ok(tag, "", name+" completed")
}

func (c *conn) cmdRename(tag string) error {
	a := c.args()
	from := a.sp().mailbox()
	to := a.sp().mailbox()
	if err := a.end(); err != nil {
		return err
	}
	if err := c.sess.Rename(from, to, nil); err != nil {
		return err
	}
	return c.ok(tag, "", "RENAME completed")
}

func (c *conn) cmdList(tag string, lsub bool) error {
	opts := &imap.ListOptions{}
	var ref string
	var patterns []string
	extended := false
	err := c.dec.sp()
	if err == nil && !lsub && c.dec.accept('(') {
		extended = true
		c.dec.unread()
		err = c.dec.list(func() error {
			a, err := c.dec.atom()
			switch strings.ToUpper(a) {
			case "SUBSCRIBED":
				opts.SelectSubscribed = true
			case "REMOTE":
				opts.SelectRemote = true
			case "RECURSIVEMATCH":
				opts.SelectRecursiveMatch = true
			case "SPECIAL-USE":
				opts.SelectSpecialUse = true
			default:
				if err == nil {
					err = badSyntax("Unknown LIST selection option")
				}
			}
			return err
		})
		if err == nil {
			err = c.dec.sp()
		}
	}
	if err == nil {
		ref, err = c.dec.mailbox()
	}
	if err == nil {
		err = c.dec.sp()
	}
	if err == nil {
		if c.dec.accept('(') {
			extended = true
			c.dec.unread()
			err = c.dec.list(func() error {
				p, err := c.dec.listMailbox()
				patterns = append(patterns, p)
				return err
			})
		} else {
			var p string
			p, err = c.dec.listMailbox()
			patterns = append(patterns, p)
		}
	}
	if err == nil && !lsub && c.dec.accept(' ') {
		extended = true
		var a string
		a, err = c.dec.atom()
		if err == nil && !strings.EqualFold(a, "RETURN") {
			err = badSyntax("Expected RETURN")
		}
		if err == nil {
			err = c.dec.sp()
		}
		if err == nil {
			err = c.dec.atoms(func(a string) error {
				switch a {
				case "SUBSCRIBED":
					opts.ReturnSubscribed = true
				case "CHILDREN":
					opts.ReturnChildren = true
				case "SPECIAL-USE":
					opts.ReturnSpecialUse = true
				case "STATUS":
					if err := c.dec.sp(); err != nil {
						return err
					}
					so, err := c.statusItems()
					opts.ReturnStatus = so
					return err
				default:
					return badSyntax("Unknown LIST return option")
				}
				return nil
			})
		}
	}
	if err == nil {
		err = c.end()
	}
	if err != nil {
		return err
	}
	if opts.SelectRecursiveMatch && !opts.SelectSubscribed {
		return badSyntax("RECURSIVEMATCH needs another selection option")
	}
	if lsub {
		opts.SelectSubscribed = true
	}
	_ = extended
	if len(patterns) == 1 && patterns[0] == "" {
		patterns = nil
	}
	w := &respWriter{c: c, lsub: lsub, status: opts.ReturnStatus}
	if err := c.sess.List(w, ref, patterns, opts); err != nil {
		return err
	}
	name := "LIST"
	if lsub {
		name = "LSUB"
	}
	return c.ok(tag, "", name+" completed")
}

func (c *conn) statusItems() (*imap.StatusOptions, error) {
	o := &imap.StatusOptions{}
	err := c.dec.atoms(func(a string) error {
		switch a {
		case "MESSAGES":
			o.NumMessages = true
		case "UIDNEXT":
			o.UIDNext = true
		case "UIDVALIDITY":
			o.UIDValidity = true
		case "UNSEEN":
			o.NumUnseen = true
		case "DELETED":
			o.NumDeleted = true
		case "SIZE":
			o.Size = true
		case "RECENT":
			o.NumRecent = true
		case "APPENDLIMIT":
			o.AppendLimit = true
		case "DELETED-STORAGE":
			o.DeletedStorage = true
		case "HIGHESTMODSEQ":
			if c.srv.modSeqs == nil {
				return badSyntax("CONDSTORE is not supported")
			}
			o.HighestModSeq = true
			c.enableCondstore()
		default:
			return badSyntax("Unknown STATUS item")
		}
		return nil
	})
	return o, err
}

func (c *conn) cmdStatus(tag string) error {
	var name string
	err := c.dec.sp()
	if err == nil {
		name, err = c.dec.mailbox()
	}
	if err == nil {
		err = c.dec.sp()
	}
	var o *imap.StatusOptions
	if err == nil {
		o, err = c.statusItems()
	}
	if err == nil {
		err = c.end()
	}
	if err != nil {
		return err
	}
	data, err := c.sess.Status(name, o)
	if err != nil {
		return err
	}
	c.writeStatus(data, o)
	return c.ok(tag, "", "STATUS completed")
}

func (c *conn) writeStatus(d *imap.StatusData, o *imap.StatusOptions) {
	e := &c.enc
	e.raw("* STATUS ")
	e.mailbox(d.Mailbox)
	e.raw(" (")
	var items []string
	add := func(name string, v any) { items = append(items, fmt.Sprintf("%s %v", name, v)) }
	if o.NumMessages {
		add("MESSAGES", *d.NumMessages)
	}
	if o.UIDNext {
		add("UIDNEXT", d.UIDNext)
	}
	if o.UIDValidity {
		add("UIDVALIDITY", d.UIDValidity)
	}
	if o.NumUnseen {
		add("UNSEEN", *d.NumUnseen)
	}
	if o.NumDeleted {
		add("DELETED", *d.NumDeleted)
	}
	if o.Size {
		add("SIZE", *d.Size)
	}
	if o.NumRecent {
		add("RECENT", *d.NumRecent)
	}
	if o.AppendLimit {
		add("APPENDLIMIT", *d.AppendLimit)
	}
	if o.DeletedStorage {
		add("DELETED-STORAGE", *d.DeletedStorage)
	}
	if o.HighestModSeq {
		add("HIGHESTMODSEQ", d.HighestModSeq)
	}
	e.raw(strings.Join(items, " "))
	e.raw(")\r\n")
}

func (c *conn) cmdAppend(tag string) error {
	var name string
	err := c.dec.sp()
	if err == nil {
		name, err = c.dec.mailbox()
	}
	if err == nil {
		err = c.dec.sp()
	}
	opts := &imap.AppendOptions{}
	if err == nil && c.dec.accept('(') {
		c.dec.unread()
		opts.Flags, err = c.dec.flagList()
		if err == nil {
			err = c.dec.sp()
		}
	}
	if err == nil {
		if b, perr := c.dec.peek(); perr == nil && b == '"' {
			var s string
			if s, err = c.dec.quoted(); err == nil {
				opts.Time, err = time.Parse("_2-Jan-2006 15:04:05 -0700", s)
				if err != nil {
					err = badSyntax("Bad date-time")
				}
			}
			if err == nil {
				err = c.dec.sp()
			}
		}
	}
	var h *literalHeader
	if err == nil {
		h, err = c.dec.literalHeader(true)
	}
	if err != nil {
		return err
	}
	if h.size > int64(c.srv.opts.AppendLimit) {
		return refuseLiteral(h, imap.ResponseCodeTooBig, "Message exceeds APPENDLIMIT")
	}
	// The folder and the flags are checked before the literal is asked
	// for, so a client is not made to send a message that cannot be stored.
	if err := c.sess.appendCheck(name, opts.Flags); err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) {
			return refuseLiteral(h, ie.Code, ie.Text)
		}
		return err
	}
	if err := c.dec.acceptLiteral(h); err != nil {
		return err
	}
	lr := io.LimitReader(c.br, h.size)
	perr := c.sess.Append(name, lr, h.size, opts)
	if _, err := io.Copy(io.Discard, lr); err != nil {
		return err
	}
	if err := c.end(); err != nil {
		if c.sess.appendOp != nil {
			c.sess.appendOp.discard()
			c.sess.appendOp = nil
		}
		c.srv.logger().Debug("imapserver: APPEND not ended by CRLF; message dropped", "mailbox", c.sess.mailbox, "remote", c.nc.ip)
		c.status(tag, imap.StatusResponseTypeBad, imap.ResponseCodeClientBug, "APPEND syntax error")
		return errLogout
	}
	if perr != nil {
		return perr
	}
	data, err := c.sess.finishAppend()
	if err != nil {
		return err
	}
	if err := c.poll(true); err != nil {
		return err
	}
	return c.ok(tag, fmt.Sprintf("APPENDUID %d %d", data.UIDValidity, data.UID), "APPEND completed")
}

// cmdIdle waits for DONE while telling the client of changes. The reader
// of DONE runs on a goroutine of its own and touches nothing but the
// reader; the session's view is used on this goroutine only.
// watchHangup runs a command that may take long (SEARCH over message
// text) while a goroutine watches the connection: when the client goes
// away meanwhile, the connection's context is cancelled, and with it the
// command's work. Input that arrives (a pipelined command) ends the watch
// and waits in the reader.
func (c *conn) watchHangup(run func() error) error {
	if c.br.Buffered() > 0 {
		return run()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := c.br.Peek(1); err != nil {
			var ne net.Error
			if !(errors.As(err, &ne) && ne.Timeout()) {
				c.cancel()
			}
		}
	}()
	err := run()
	c.nc.Conn.SetReadDeadline(time.Now()) // ends the Peek
	<-done
	c.nc.SetReadDeadline(time.Now().Add(c.srv.opts.IdleTimeout))
	return err
}
