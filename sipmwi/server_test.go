package sipmwi_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um/sipmwi"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// phone is a SIP endpoint on loopback made with sipgo: it subscribes, and
// answers NOTIFYs with 200 (or, dead, reads and drops everything).
type phone struct {
	client  *sipgo.Client
	contact sip.Uri
	mu      sync.Mutex
	got     []*sip.Request
	arrived chan struct{}
}

func newPhone(t testing.TB, dead bool) *phone {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	p := &phone{contact: sip.Uri{Scheme: "sip", User: "phone", Host: "127.0.0.1", Port: port},
		arrived: make(chan struct{}, 1000)}
	ua, err := sipgo.NewUA()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close(); conn.Close() })
	if p.client, err = sipgo.NewClient(ua); err != nil {
		t.Fatal(err)
	}
	if dead {
		// Reads and never answers: a phone unplugged behind a live
		// network.
		go func() {
			buf := make([]byte, 65536)
			for {
				if _, _, err := conn.ReadFrom(buf); err != nil {
					return
				}
			}
		}()
		return p
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnNotify(func(req *sip.Request, tx sip.ServerTransaction) {
		p.mu.Lock()
		p.got = append(p.got, req)
		p.mu.Unlock()
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		p.arrived <- struct{}{}
	})
	go srv.ServeUDP(conn)
	return p
}

// subscribe sends a SUBSCRIBE for mailbox to the server at addr and
// returns the final answer.
func (p *phone) subscribe(t testing.TB, addr, mailbox string, headers ...sip.Header) *sip.Response {
	t.Helper()
	host, portText, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portText)
	req := sip.NewRequest(sip.SUBSCRIBE, sip.Uri{Scheme: "sip", User: mailbox, Host: host, Port: port})
	req.AppendHeader(&sip.ContactHeader{Address: p.contact})
	has := map[string]bool{}
	for _, h := range headers {
		has[h.Name()] = true
		req.AppendHeader(h)
	}
	if !has["Event"] {
		req.AppendHeader(sip.NewHeader("Event", "message-summary"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.client.Do(ctx, req)
	if err != nil {
		t.Fatalf("SUBSCRIBE %s: %v", mailbox, err)
	}
	return res
}

// next waits for the next NOTIFY.
func (p *phone) next(t testing.TB) *sip.Request {
	t.Helper()
	select {
	case <-p.arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("no NOTIFY within 20s")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got[len(p.got)-1]
}

func header(m interface{ GetHeader(string) sip.Header }, name string) string {
	if h := m.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

func TestSubscribeRefused(t *testing.T) {
	p := newPBX(t, &sipmwi.Options{
		Mailbox: func(user string) (string, bool) { return user, user != "nobody" },
		Allow: func(ctx context.Context, mailbox string, req *sip.Request) error {
			if mailbox == "1002" {
				return errors.New("not this phone's mailbox")
			}
			return nil
		},
	})
	ph := newPhone(t, false)
	for _, tc := range []struct {
		name    string
		mailbox string
		headers []sip.Header
		code    int
		header  string // a header the answer must carry, with its value
		value   string
	}{
		{"another event package", "1001", []sip.Header{sip.NewHeader("Event", "presence")}, 489, "Allow-Events", "message-summary"},
		{"a mailbox that does not exist", "1009", nil, 404, "", ""},
		{"a mailbox the host's Allow refuses", "1002", nil, 403, "", ""},
		{"a user the host maps to no mailbox", "nobody", nil, 404, "", ""},
		{"a body type it cannot take", "1001", []sip.Header{sip.NewHeader("Accept", "application/pidf+xml")}, 406, "Accept", "application/simple-message-summary"},
		{"an interval below MinExpires", "1001", []sip.Header{sip.NewHeader("Expires", "10")}, 423, "Min-Expires", "60"},
		{"an Expires that is no number", "1001", []sip.Header{sip.NewHeader("Expires", "soon")}, 400, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := ph.subscribe(t, p.udp, tc.mailbox, tc.headers...)
			if res.StatusCode != tc.code {
				t.Fatalf("SUBSCRIBE answered %d %s, want %d", res.StatusCode, res.Reason, tc.code)
			}
			if tc.header != "" {
				if got := header(res, tc.header); got != tc.value {
					t.Errorf("answer's %s = %q, want %q", tc.header, got, tc.value)
				}
			}
		})
	}
	if got := p.srv.Subscriptions("1001"); got != 0 {
		t.Errorf("Subscriptions(1001) = %d after refused SUBSCRIBEs, want 0", got)
	}
	select {
	case <-ph.arrived:
		t.Error("a refused SUBSCRIBE got a NOTIFY")
	case <-time.After(100 * time.Millisecond):
	}

	t.Run("a refresh of a dialog that does not exist", func(t *testing.T) {
		to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "1001", Host: "127.0.0.1"}, Params: sip.NewParams()}
		to.Params.Add("tag", "no-such-dialog")
		res := ph.subscribe(t, p.udp, "1001", to)
		if res.StatusCode != 481 {
			t.Fatalf("SUBSCRIBE in an unknown dialog answered %d, want 481", res.StatusCode)
		}
	})
}

func TestSubscribeBeforeAttach(t *testing.T) {
	p := newDetachedPBX(t, nil)
	res := newPhone(t, false).subscribe(t, p.udp, "1001")
	if res.StatusCode != 503 || header(res, "Retry-After") == "" {
		t.Fatalf("SUBSCRIBE before Attach answered %d Retry-After %q, want 503 with Retry-After", res.StatusCode, header(res, "Retry-After"))
	}
}

// TestSubscriptionLimits: a peer that floods SUBSCRIBEs holds at most
// the subscriptions a limit allows; the rest are answered 503 and kept
// nowhere.
func TestSubscriptionLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts sipmwi.Options
	}{
		{"per peer", sipmwi.Options{MaxPerPeer: 3, MaxPerMailbox: 100, MaxSubscriptions: 100}},
		{"per mailbox", sipmwi.Options{MaxPerPeer: 100, MaxPerMailbox: 3, MaxSubscriptions: 100}},
		{"in total", sipmwi.Options{MaxPerPeer: 100, MaxPerMailbox: 100, MaxSubscriptions: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPBX(t, &tc.opts)
			ph := newPhone(t, false)
			codes := map[int]int{}
			for range 10 {
				res := ph.subscribe(t, p.udp, "1001")
				codes[res.StatusCode]++
				if res.StatusCode == 503 && header(res, "Retry-After") == "" {
					t.Errorf("503 without Retry-After")
				}
			}
			if codes[200] != 3 || codes[503] != 7 {
				t.Errorf("10 SUBSCRIBEs answered %v, want 3×200 and 7×503", codes)
			}
			if got := p.srv.Subscriptions("1001"); got != 3 {
				t.Errorf("Subscriptions(1001) = %d, want 3", got)
			}
		})
	}
}

// TestDeadSubscriberDropped: a NOTIFY nobody answers ends its subscription
// (RFC 6665 section 4.2.2) once NotifyTimeout passes, so a dead phone
// costs nothing for long; a live phone of the same mailbox keeps its own.
func TestDeadSubscriberDropped(t *testing.T) {
	p := newPBX(t, &sipmwi.Options{NotifyTimeout: time.Second})
	dead, live := newPhone(t, true), newPhone(t, false)
	if res := dead.subscribe(t, p.udp, "1001"); res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE answered %d", res.StatusCode)
	}
	if res := live.subscribe(t, p.udp, "1001"); res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE answered %d", res.StatusCode)
	}
	live.next(t)
	deadline := time.Now().Add(20 * time.Second)
	for p.srv.Subscriptions("1001") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("Subscriptions(1001) = %d 20s after a dead phone's NOTIFY, want 1 (the live phone's)", p.srv.Subscriptions("1001"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.deposit(t)
	if got := live.next(t).Body(); string(got) != body("yes", "1/0 (0/0)") {
		t.Errorf("live phone's NOTIFY after the deposit = %q", got)
	}
}

// TestExpiry: a subscription not refreshed in time ends with a NOTIFY of
// Subscription-State: terminated;reason=timeout.
func TestExpiry(t *testing.T) {
	p := newPBX(t, &sipmwi.Options{MinExpires: time.Second})
	ph := newPhone(t, false)
	res := ph.subscribe(t, p.udp, "1001", sip.NewHeader("Expires", "1"))
	if res.StatusCode != 200 || header(res, "Expires") != "1" {
		t.Fatalf("SUBSCRIBE answered %d Expires %q, want 200 with 1", res.StatusCode, header(res, "Expires"))
	}
	if got := header(ph.next(t), "Subscription-State"); got != "active;expires=1" {
		t.Errorf("first NOTIFY Subscription-State = %q, want active;expires=1", got)
	}
	n := ph.next(t)
	if got := header(n, "Subscription-State"); got != "terminated;reason=timeout" {
		t.Errorf("NOTIFY at expiry: Subscription-State = %q, want terminated;reason=timeout", got)
	}
	if got := string(n.Body()); got != body("no", "0/0 (0/0)") {
		t.Errorf("NOTIFY at expiry body = %q, want the state", got)
	}
	if got := p.srv.Subscriptions("1001"); got != 0 {
		t.Errorf("Subscriptions(1001) = %d after expiry, want 0", got)
	}
}

// TestFetch: a SUBSCRIBE with Expires: 0 outside a dialog is a fetch: one
// NOTIFY of the state, terminated, and no subscription kept.
func TestFetch(t *testing.T) {
	p := newPBX(t, nil)
	p.deposit(t)
	ph := newPhone(t, false)
	if res := ph.subscribe(t, p.udp, "1001", sip.NewHeader("Expires", "0")); res.StatusCode != 200 {
		t.Fatalf("fetch answered %d", res.StatusCode)
	}
	n := ph.next(t)
	if got := header(n, "Subscription-State"); got != "terminated;reason=timeout" {
		t.Errorf("fetch NOTIFY Subscription-State = %q", got)
	}
	if got := string(n.Body()); got != body("yes", "1/0 (0/0)") {
		t.Errorf("fetch NOTIFY body = %q", got)
	}
	if got := p.srv.Subscriptions("1001"); got != 0 {
		t.Errorf("Subscriptions(1001) = %d after a fetch, want 0", got)
	}
}

// TestCloseEndsServe: Close stops ServeUDP and ServeTCP (closing their
// listeners), which return ErrClosed, and later calls refuse to serve.
func TestCloseEndsServe(t *testing.T) {
	srv, err := sipmwi.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- srv.ServeUDP(conn) }()
	go func() { errs <- srv.ServeTCP(ln) }()
	if err := srv.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, sipmwi.ErrClosed) {
				t.Errorf("Serve after Close returned %v, want ErrClosed", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a Serve call did not return within 10s of Close")
		}
	}
	again, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer again.Close()
	if err := srv.ServeUDP(again); !errors.Is(err, sipmwi.ErrClosed) {
		t.Errorf("ServeUDP after Close = %v, want ErrClosed", err)
	}
}

// TestShutdownTerminates: Shutdown ends every subscription with a NOTIFY of
// terminated;reason=deactivated (subscribe again at once, elsewhere) and
// refuses new ones meanwhile.
func TestShutdownTerminates(t *testing.T) {
	p := newPBX(t, nil)
	ph := newPhone(t, false)
	if res := ph.subscribe(t, p.udp, "1001"); res.StatusCode != 200 {
		t.Fatalf("SUBSCRIBE answered %d", res.StatusCode)
	}
	ph.next(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}
	n := ph.next(t)
	if got := header(n, "Subscription-State"); got != "terminated;reason=deactivated" {
		t.Errorf("NOTIFY at shutdown: Subscription-State = %q, want terminated;reason=deactivated", got)
	}
	if got := p.srv.Subscriptions("1001"); got != 0 {
		t.Errorf("Subscriptions(1001) = %d after Shutdown, want 0", got)
	}
}

// TestTCPConnectionsPerPeer: a peer opening TCP connections without end
// keeps at most MaxConnsPerPeer; the others are closed on accept, and a
// closed one frees its place.
func TestTCPConnectionsPerPeer(t *testing.T) {
	p := newPBX(t, &sipmwi.Options{MaxConnsPerPeer: 2})
	var open []net.Conn
	defer func() {
		for _, c := range open {
			c.Close()
		}
	}()
	for range 4 {
		c, err := net.Dial("tcp", p.tcp)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
	}
	var kept int
	for _, c := range open {
		if alive(c) {
			kept++
		}
	}
	if kept != 2 {
		t.Fatalf("%d of 4 connections from one peer kept open, want 2", kept)
	}
	open[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", p.tcp)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		if alive(c) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new connection kept within 10s of closing a kept one")
		}
	}
}

// alive reports whether the server keeps c open: one it refused is closed,
// and the read sees EOF.
func alive(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
