package sipmwi

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/emiago/sipgo/sip"
)

// handleSubscribe answers a SUBSCRIBE (RFC 6665 section 4.2.1): a new
// subscription, a refresh, or an unsubscribe (Expires: 0).
func (s *Server) handleSubscribe(req *sip.Request, tx sip.ServerTransaction) {
	reply := func(code int, reason string, headers ...sip.Header) {
		res := sip.NewResponseFromRequest(req, code, reason, nil)
		for _, h := range headers {
			res.AppendHeader(h)
		}
		_ = tx.Respond(res)
	}
	if ev := eventOf(req); ev != eventPackage {
		s.log.Debug("sipmwi: SUBSCRIBE for another event", "event", ev, "remote", req.Source())
		reply(489, "Bad Event", sip.NewHeader("Allow-Events", eventPackage))
		return
	}
	if !accepts(req) {
		reply(406, "Not Acceptable", sip.NewHeader("Accept", contentType))
		return
	}
	from, to, callID, cseq := req.From(), req.To(), req.CallID(), req.CSeq()
	contact := req.Contact()
	if from == nil || to == nil || callID == nil || cseq == nil {
		reply(400, "Bad Request")
		return
	}
	fromTag, _ := from.Params.Get("tag")
	if fromTag == "" {
		reply(400, "Missing From tag")
		return
	}
	expires, ok := s.expiresOf(req)
	if !ok {
		reply(400, "Bad Expires")
		return
	}
	if expires > 0 && expires < s.opts.MinExpires {
		reply(423, "Interval Too Brief", sip.NewHeader("Min-Expires", strconv.Itoa(int(s.opts.MinExpires/time.Second))))
		return
	}

	if toTag, _ := to.Params.Get("tag"); toTag != "" {
		s.refresh(req, dialogKey{string(*callID), fromTag, toTag}, expires, reply)
		return
	}

	if contact == nil {
		reply(400, "Missing Contact")
		return
	}
	user := req.Recipient.User
	mailbox := user
	if s.opts.Mailbox != nil {
		var ok bool
		if mailbox, ok = s.opts.Mailbox(user); !ok {
			reply(404, "Not Found")
			return
		}
	}
	s.mu.Lock()
	src := s.source
	s.mu.Unlock()
	if src == nil {
		reply(503, "Service Unavailable", sip.NewHeader("Retry-After", "5"))
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.StateTimeout)
	defer cancel()
	if s.opts.Allow != nil {
		if err := s.opts.Allow(ctx, mailbox, req); err != nil {
			s.log.Debug("sipmwi: SUBSCRIBE refused", "mailbox", mailbox, "remote", req.Source(), "error", err)
			reply(403, "Forbidden")
			return
		}
	}

	d := &dialog{
		key:     dialogKey{string(*callID), fromTag, sip.GenerateTagN(16)},
		mailbox: mailbox,
		local:   to.Address,
		remote:  from.Address,
		target:  contact.Address,
		tcp:     strings.EqualFold(req.Transport(), "TCP"),
		source:  req.Source(),
		peer:    peerOf(req),
		ourURI:  ourURI(req, mailbox),
	}
	for _, h := range req.GetHeaders("Record-Route") {
		if rr, ok := h.(*sip.RecordRouteHeader); ok {
			d.routes = append(d.routes, rr.Address)
		}
	}

	// Fetch (Expires: 0 on a new dialog): one NOTIFY of the state, then
	// terminated, with nothing kept.
	fetch := expires == 0
	if !fetch {
		if code, reason := s.admit(d, expires); code != 0 {
			s.log.Debug("sipmwi: SUBSCRIBE over a limit", "mailbox", mailbox, "remote", req.Source(), "reason", reason)
			reply(code, reason, sip.NewHeader("Retry-After", "60"))
			return
		}
	}
	// Registered before the state is read: a lamp change from now on
	// reaches this dialog, and a state read here never overwrites one
	// queued by Update meanwhile (version).
	s.mu.Lock()
	version := d.version
	s.mu.Unlock()
	st, err := src.MWI(ctx, mailbox)
	if err != nil {
		s.mu.Lock()
		s.removeLocked(d)
		s.mu.Unlock()
		if errors.Is(err, um.ErrNotFound) {
			reply(404, "Not Found")
			return
		}
		s.log.Warn("sipmwi: state for SUBSCRIBE", "mailbox", mailbox, "error", err)
		reply(500, "Server Internal Error", sip.NewHeader("Retry-After", "10"))
		return
	}

	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	res.To().Params.Add("tag", d.key.localTag)
	res.AppendHeader(sip.NewHeader("Contact", "<"+d.ourURI.String()+">"))
	res.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(int(expires/time.Second))))
	_ = tx.Respond(res)

	s.mu.Lock()
	defer s.mu.Unlock()
	if fetch {
		d.expires = time.Now()
		d.pending = &st
		s.terminateLocked(d, "timeout")
		return
	}
	if d.version == version {
		s.queueLocked(d, st)
	}
}

// admit counts d in and registers it, or returns the answer for a limit
// it would pass.
func (s *Server) admit(d *dialog, expires time.Duration) (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing || s.closed:
		return 503, "Shutting Down"
	case len(s.dialogs) >= s.opts.MaxSubscriptions:
		return 503, "Too Many Subscriptions"
	case s.perPeer[d.peer] >= s.opts.MaxPerPeer:
		return 503, "Too Many Subscriptions From Peer"
	case len(s.byMailbox[d.mailbox]) >= s.opts.MaxPerMailbox:
		return 503, "Too Many Subscriptions For Mailbox"
	}
	d.tracked = true
	s.dialogs[d.key] = d
	set := s.byMailbox[d.mailbox]
	if set == nil {
		set = make(map[*dialog]struct{})
		s.byMailbox[d.mailbox] = set
	}
	set[d] = struct{}{}
	s.perPeer[d.peer]++
	if d.tcp {
		s.bySource[d.source]++
	}
	s.armLocked(d, expires)
	return 0, ""
}

// armLocked (re)starts d's expiry: when it passes without a refresh, the
// subscription ends with reason=timeout.
func (s *Server) armLocked(d *dialog, expires time.Duration) {
	d.expires = time.Now().Add(expires)
	if d.expiry != nil {
		d.expiry.Stop()
	}
	d.expiry = time.AfterFunc(expires, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if d.tracked && !time.Now().Before(d.expires) {
			s.terminateLocked(d, "timeout")
		}
	})
}

// refresh answers a SUBSCRIBE inside an existing dialog: a new expiry and a
// NOTIFY of the current state, or, with Expires: 0, the end.
func (s *Server) refresh(req *sip.Request, key dialogKey, expires time.Duration, reply func(int, string, ...sip.Header)) {
	s.mu.Lock()
	d := s.dialogs[key]
	if d == nil || d.finished || d.ending != "" {
		s.mu.Unlock()
		reply(481, "Subscription Does Not Exist")
		return
	}
	if c := req.Contact(); c != nil && d.routes == nil {
		// SUBSCRIBE refreshes the dialog's remote target (RFC 6665
		// section 4.1.2.1): a phone that moved says so here.
		d.target = c.Address
	}
	if expires > 0 {
		s.armLocked(d, expires)
	}
	src := s.source
	s.mu.Unlock()
	// The 200 goes out before the NOTIFY that follows it.
	reply(200, "OK", sip.NewHeader("Expires", strconv.Itoa(int(expires/time.Second))))
	if expires == 0 {
		s.mu.Lock()
		s.terminateLocked(d, "timeout")
		s.mu.Unlock()
		return
	}
	// RFC 6665 section 4.2.1.2: a refresh is answered with a NOTIFY of
	// the current state, too.
	s.mu.Lock()
	version := d.version
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.StateTimeout)
	defer cancel()
	st, err := src.MWI(ctx, d.mailbox)
	if err != nil {
		s.log.Warn("sipmwi: state for refresh", "mailbox", d.mailbox, "error", err)
		st = d.last
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if d.version == version {
		s.queueLocked(d, st)
	}
}

// expiresOf reads the SUBSCRIBE's Expires, capped at MaxExpires; a missing
// one means MaxExpires.
func (s *Server) expiresOf(req *sip.Request) (time.Duration, bool) {
	h := req.GetHeader("Expires")
	if h == nil {
		return s.opts.MaxExpires, true
	}
	n, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32)
	if err != nil {
		return 0, false
	}
	return min(time.Duration(n)*time.Second, s.opts.MaxExpires), true
}

// eventOf returns the event package of a request's Event header (or its
// compact form o), without parameters.
func eventOf(req *sip.Request) string {
	h := req.GetHeader("Event")
	if h == nil {
		h = req.GetHeader("o")
	}
	if h == nil {
		return ""
	}
	v := h.Value()
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	return strings.ToLower(strings.TrimSpace(v))
}

// accepts reports whether the request's Accept headers, if any, allow the
// message-summary body.
func accepts(req *sip.Request) bool {
	hs := req.GetHeaders("Accept")
	if len(hs) == 0 {
		return true
	}
	for _, h := range hs {
		for _, t := range strings.Split(h.Value(), ",") {
			if i := strings.IndexByte(t, ';'); i >= 0 {
				t = t[:i]
			}
			switch strings.ToLower(strings.TrimSpace(t)) {
			case contentType, "application/*", "*/*":
				return true
			}
		}
	}
	return false
}

// ourURI is the Contact this server gives a dialog: the mailbox at the
// address the subscriber reached.
func ourURI(req *sip.Request, mailbox string) sip.Uri {
	u := sip.Uri{Scheme: "sip", User: mailbox, Host: req.Recipient.Host, Port: req.Recipient.Port}
	if strings.EqualFold(req.Transport(), "TCP") {
		u.UriParams = sip.NewParams()
		u.UriParams.Add("transport", "tcp")
	}
	return u
}
