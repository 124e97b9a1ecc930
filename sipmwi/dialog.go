package sipmwi

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/embeddedum/um"
	"github.com/emiago/sipgo/sip"
)

const (
	eventPackage = "message-summary"
	contentType  = "application/simple-message-summary"
)

type dialogKey struct{ callID, remoteTag, localTag string }

// dialog is one subscription's dialog (RFC 6665), or, with contact set, a
// configured phone that gets NOTIFYs outside any dialog.
type dialog struct {
	// Set once, before the dialog is shared.
	key     dialogKey
	mailbox string
	contact bool    // unsolicited: each NOTIFY is a request of its own
	local   sip.Uri // our URI: the SUBSCRIBE's To
	remote  sip.Uri // the subscriber's: the SUBSCRIBE's From
	routes  []sip.Uri
	tcp     bool
	source  string // the SUBSCRIBE's source address, where TCP NOTIFYs go
	peer    string // the source IP, for the per-peer count
	ourURI  sip.Uri

	// Guarded by the Server's mutex.
	target   sip.Uri // where NOTIFYs go: the subscriber's Contact
	tracked  bool    // counted in the Server's maps
	expires  time.Time
	expiry   *time.Timer
	cseq     uint32
	pending  *um.MWIState
	last     um.MWIState // the state last sent, for a terminating NOTIFY
	version  uint64      // bumped by every queued state
	ending   string      // a reason once the subscription is being terminated
	sending  bool        // a goroutine runs this dialog's queue
	finished bool        // the terminating NOTIFY is queued or sent: no more
}

func newContactDialog(mailbox string, target sip.Uri) *dialog {
	return &dialog{mailbox: mailbox, contact: true, target: target,
		tcp: transportOf(target) == "TCP", remote: target}
}

func transportOf(u sip.Uri) string {
	if u.UriParams != nil {
		if t, ok := u.UriParams.Get("transport"); ok && (t == "tcp" || t == "TCP") {
			return "TCP"
		}
	}
	return "UDP"
}

// queueLocked makes st the next state d announces and starts d's sender
// when none runs.
func (s *Server) queueLocked(d *dialog, st um.MWIState) {
	if d.finished {
		return
	}
	st2 := st
	d.pending = &st2
	d.version++
	s.kickLocked(d)
}

// terminateLocked ends d's subscription with a final NOTIFY giving reason.
func (s *Server) terminateLocked(d *dialog, reason string) {
	if d.finished || d.contact {
		return
	}
	d.ending = reason
	// Gone from the maps at once: no lamp change queues on it any more,
	// and its place counts free, while the final NOTIFY goes out.
	s.untrackLocked(d)
	s.kickLocked(d)
}

func (s *Server) kickLocked(d *dialog) {
	if d.sending || s.closed || (s.closing && d.ending == "") {
		return
	}
	d.sending = true
	s.senders.Add(1)
	go s.send(d)
}

// removeLocked forgets d: no NOTIFY reaches it any more.
func (s *Server) removeLocked(d *dialog) {
	d.finished = true
	s.untrackLocked(d)
}

// untrackLocked takes d out of the server's maps and stops its expiry.
func (s *Server) untrackLocked(d *dialog) {
	if d.expiry != nil {
		d.expiry.Stop()
	}
	if !d.tracked {
		return
	}
	d.tracked = false
	delete(s.dialogs, d.key)
	if set := s.byMailbox[d.mailbox]; set != nil {
		delete(set, d)
		if len(set) == 0 {
			delete(s.byMailbox, d.mailbox)
		}
	}
	if s.perPeer[d.peer]--; s.perPeer[d.peer] <= 0 {
		delete(s.perPeer, d.peer)
	}
	if d.tcp {
		if s.bySource[d.source]--; s.bySource[d.source] <= 0 {
			delete(s.bySource, d.source)
		}
	}
}

// send runs d's queue: one NOTIFY at a time, always of the latest state.
func (s *Server) send(d *dialog) {
	defer s.senders.Done()
	for {
		s.mu.Lock()
		if s.closed || d.finished || (d.pending == nil && d.ending == "") {
			d.sending = false
			s.mu.Unlock()
			return
		}
		st := d.pending
		d.pending = nil
		reason := d.ending
		if reason != "" {
			d.finished = true
			if st == nil {
				st = &d.last
			}
		}
		d.last = *st
		req := s.notifyLocked(d, st, reason)
		target := d.target.String()
		s.mu.Unlock()

		var res *sip.Response
		var err error
		if d.tcp && !d.contact && len(d.routes) == 0 && !s.tcp.open(d.source) {
			// The subscriber's connection is gone. sipgo would dial the
			// port it came from, where phones do not listen, on a
			// connection none of the TCP limits cover; the phone
			// subscribes again on its next one.
			err = errConnClosed
		} else {
			res, err = s.do(req)
		}
		s.mu.Lock()
		if reason != "" {
			s.removeLocked(d)
		} else if notifyFailed(res, err) && !d.contact {
			// RFC 6665 section 4.2.2: a failed NOTIFY ends the
			// subscription; the phone subscribes again when it is back.
			s.removeLocked(d)
		}
		s.mu.Unlock()
		s.logResult(d.mailbox, target, res, err)
	}
}

func (s *Server) do(req *sip.Request) (*sip.Response, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.NotifyTimeout)
	defer cancel()
	return s.client.Do(ctx, req)
}

// errConnClosed fails a NOTIFY whose subscriber's TCP connection closed.
var errConnClosed = errors.New("sipmwi: the subscriber's TCP connection is closed")

// notifyFailed reports whether a NOTIFY failed in the sense of RFC 6665
// section 4.2.2: no answer in time, or an error answer that neither asks to
// retry later nor to authenticate.
func notifyFailed(res *sip.Response, err error) bool {
	if err != nil {
		return true
	}
	if res.StatusCode < 300 {
		return false
	}
	if res.StatusCode == 401 || res.StatusCode == 407 || res.GetHeader("Retry-After") != nil {
		return false
	}
	return true
}

func (s *Server) logResult(mailbox, target string, res *sip.Response, err error) {
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		s.log.Debug("sipmwi: NOTIFY unanswered", "mailbox", mailbox, "remote", target, "error", err)
	case err == nil && res.StatusCode >= 300:
		s.log.Debug("sipmwi: NOTIFY refused", "mailbox", mailbox, "remote", target, "status", res.StatusCode)
	}
}

// notifyLocked builds d's next NOTIFY of st; reason, when set, terminates
// the subscription.
func (s *Server) notifyLocked(d *dialog, st *um.MWIState, reason string) *sip.Request {
	req := sip.NewRequest(sip.NOTIFY, d.target)
	d.cseq++
	if d.contact {
		local := s.contactFromLocked(d)
		from := &sip.FromHeader{Address: local, Params: sip.NewParams()}
		from.Params.Add("tag", sip.GenerateTagN(16))
		to := &sip.ToHeader{Address: d.target}
		callID := sip.CallIDHeader(sip.GenerateTagN(24))
		req.AppendHeader(from)
		req.AppendHeader(to)
		req.AppendHeader(&callID)
		req.AppendHeader(&sip.CSeqHeader{SeqNo: d.cseq, MethodName: sip.NOTIFY})
		req.AppendHeader(sip.NewHeader("Contact", "<"+local.String()+">"))
		req.AppendHeader(sip.NewHeader("Event", eventPackage))
		req.AppendHeader(sip.NewHeader("Subscription-State", "active"))
	} else {
		from := &sip.FromHeader{Address: d.local, Params: sip.NewParams()}
		from.Params.Add("tag", d.key.localTag)
		to := &sip.ToHeader{Address: d.remote, Params: sip.NewParams()}
		to.Params.Add("tag", d.key.remoteTag)
		callID := sip.CallIDHeader(d.key.callID)
		for _, r := range d.routes {
			req.AppendHeader(&sip.RouteHeader{Address: r})
		}
		req.AppendHeader(from)
		req.AppendHeader(to)
		req.AppendHeader(&callID)
		req.AppendHeader(&sip.CSeqHeader{SeqNo: d.cseq, MethodName: sip.NOTIFY})
		req.AppendHeader(sip.NewHeader("Contact", "<"+d.ourURI.String()+">"))
		req.AppendHeader(sip.NewHeader("Event", eventPackage))
		req.AppendHeader(sip.NewHeader("Subscription-State", d.subscriptionState(reason)))
		if d.tcp && len(d.routes) == 0 {
			// Back on the subscriber's own connection: a phone on TCP
			// seldom listens where its Contact says.
			req.SetDestination(d.source)
		}
	}
	if d.tcp {
		req.SetTransport("TCP")
	} else if s.udpLocal != nil {
		// From the listening socket, the address the phone subscribed
		// to (and the one a NAT or firewall in front of it let through).
		req.Laddr = sip.Addr{IP: s.udpLocal.IP, Port: s.udpLocal.Port}
	}
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.NewHeader("User-Agent", s.opts.UserAgent))
	ct := sip.ContentTypeHeader(contentType)
	req.AppendHeader(&ct)
	req.SetBody(st.MessageSummary(d.accountLocked(s)))
	return req
}

func (d *dialog) subscriptionState(reason string) string {
	if reason != "" {
		return "terminated;reason=" + reason
	}
	left := max(int(time.Until(d.expires).Round(time.Second)/time.Second), 0)
	return "active;expires=" + strconv.Itoa(left)
}

func (d *dialog) accountLocked(s *Server) string {
	host := s.opts.Domain
	if host == "" {
		host = d.local.Host
	}
	if host == "" {
		host = s.contactFromLocked(d).Host
	}
	return fmt.Sprintf("sip:%s@%s", d.mailbox, host)
}

// contactFromLocked is our URI for an unsolicited NOTIFY.
func (s *Server) contactFromLocked(d *dialog) sip.Uri {
	u := sip.Uri{Scheme: "sip", User: d.mailbox, Host: s.opts.Domain}
	if u.Host == "" && s.udpLocal != nil {
		u.Host, u.Port = s.udpLocal.IP.String(), s.udpLocal.Port
	}
	if u.Host == "" {
		u.Host = "localhost"
	}
	return u
}
