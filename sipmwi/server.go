package sipmwi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/embeddedum/um"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Source answers the current message-waiting state of a mailbox. A
// *um.Service is one; it must return an error for which
// errors.Is(err, um.ErrNotFound) is true for a mailbox that does not exist.
type Source interface {
	MWI(ctx context.Context, mailbox string) (um.MWIState, error)
}

// Options configure a Server. The zero value works; each field says its
// default.
type Options struct {
	// Domain is the host written in Message-Account and in the From of
	// unsolicited NOTIFYs, for example "pbx.example.com". Default: the host
	// of the SUBSCRIBE's Request-URI, and for unsolicited NOTIFYs the
	// address the server listens on.
	Domain string
	// Mailbox maps the user part of a SUBSCRIBE's Request-URI to a voice
	// mailbox, for example to strip a prefix. It returns false for a user
	// that is no mailbox (answered 404). Default: the user part itself.
	Mailbox func(user string) (mailbox string, ok bool)
	// Allow decides whether a subscriber may see a mailbox's lamp, for
	// example by checking its source address against the phone registered
	// for that mailbox. A non-nil error answers 403. Default: everybody.
	Allow func(ctx context.Context, mailbox string, req *sip.Request) error
	// Contacts are phones that get unsolicited NOTIFYs (outside any
	// subscription) for a mailbox, the way many PBXs light phones that never
	// subscribe: mailbox -> SIP URIs such as "sip:1001@192.0.2.7:5060".
	Contacts map[string][]string
	// MinExpires is the shortest subscription accepted; shorter ones are
	// answered 423 with Min-Expires. Default 60 seconds.
	MinExpires time.Duration
	// MaxExpires caps a subscription's duration, and is the duration of one
	// whose SUBSCRIBE has no Expires. Default 3600 seconds.
	MaxExpires time.Duration
	// MaxSubscriptions caps the subscriptions held at once (503 beyond).
	// Default 10000.
	MaxSubscriptions int
	// MaxPerPeer caps the subscriptions from one source IP address, so that
	// one host cannot take them all (503 beyond). Default 64.
	MaxPerPeer int
	// MaxPerMailbox caps the subscriptions of one mailbox (503 beyond).
	// Default 32.
	MaxPerMailbox int
	// MaxConnsPerPeer caps the TCP connections one source IP address (an
	// IPv6 peer's whole /64 counting as one) holds open at once; more are
	// closed as they are accepted. Default 16.
	MaxConnsPerPeer int
	// MaxConns caps the TCP connections held open at once from all peers
	// together, over every ServeTCP listener; more are closed as they are
	// accepted. Each costs a goroutine and sipgo's 32 KiB read buffer,
	// and its parser's buffer of up to 64 KiB while a message arrives.
	// Default 1024.
	MaxConns int
	// MaxPendingPerConn caps the requests read from one TCP connection
	// that wait for their final answers, each on a goroutine of sipgo's;
	// at the cap nothing more is read from that connection until one is
	// answered, and a connection held at the cap for TCPIdleTimeout is
	// closed. A request that a handler of the host's (see SIP) never
	// answers counts until its connection closes; a host that serves
	// trunks with many calls at once on one connection raises it.
	// Default 64.
	MaxPendingPerConn int
	// TCPIdleTimeout closes a TCP connection on which nothing arrived for
	// that long, unless it carries a subscription (its NOTIFYs go back on
	// it). A phone that keeps its connection with RFC 5626 keep-alives
	// (CRLF, every 95 to 120 seconds) stays connected. Default 3 minutes.
	TCPIdleTimeout time.Duration
	// TCPWriteTimeout bounds one write to a TCP connection: a peer that
	// does not read what it is sent for that long loses the connection,
	// and with it the goroutines waiting to answer it. Default 5 seconds.
	TCPWriteTimeout time.Duration
	// NotifyTimeout bounds one NOTIFY transaction, retransmissions
	// included. A subscriber that does not answer in time loses its
	// subscription (RFC 6665 section 4.2.2); it delays nobody else.
	// Default 32 seconds (64*T1, SIP's Timer F).
	NotifyTimeout time.Duration
	// StateTimeout bounds the read of a mailbox's state while a SUBSCRIBE
	// waits for its answer. Default 5 seconds.
	StateTimeout time.Duration
	// UserAgent is the User-Agent header sent. Default "um".
	UserAgent string
	// Logger receives the server's log: subscriber faults at Debug, NOTIFY
	// failures at Debug, store faults at Warn. Nil means slog.Default().
	Logger *slog.Logger
}

// Server answers SUBSCRIBEs for Event: message-summary and sends NOTIFYs
// on every lamp change. It is safe for concurrent use. Make one with New,
// feed it lamp changes with Update (an um.MWIFunc), give it its Source with
// Attach, and serve with ServeUDP and ServeTCP.
type Server struct {
	opts   Options
	log    *slog.Logger
	ua     *sipgo.UserAgent
	sip    *sipgo.Server
	client *sipgo.Client
	ctx    context.Context // canceled by Close; NOTIFYs in flight end
	cancel context.CancelFunc
	tcp    *tcpConns

	mu        sync.Mutex
	source    Source
	dialogs   map[dialogKey]*dialog
	byMailbox map[string]map[*dialog]struct{}
	perPeer   map[string]int
	bySource  map[string]int       // TCP subscriptions per source address: their connections stay open
	contacts  map[string][]*dialog // unsolicited targets per mailbox
	udpLocal  *net.UDPAddr         // the UDP listener, to send from it; nil when unspecified
	listeners []io.Closer
	closing   bool // Shutdown began: only terminating NOTIFYs go out
	closed    bool
	senders   sync.WaitGroup
}

// New returns a Server with opts (nil means defaults). It does not listen
// until ServeUDP or ServeTCP.
func New(opts *Options) (*Server, error) {
	s := &Server{
		dialogs:   make(map[dialogKey]*dialog),
		byMailbox: make(map[string]map[*dialog]struct{}),
		perPeer:   make(map[string]int),
		bySource:  make(map[string]int),
		contacts:  make(map[string][]*dialog),
	}
	if opts != nil {
		s.opts = *opts
	}
	o := &s.opts
	if o.MinExpires <= 0 {
		o.MinExpires = 60 * time.Second
	}
	if o.MaxExpires <= 0 {
		o.MaxExpires = 3600 * time.Second
	}
	if o.MaxExpires < o.MinExpires {
		return nil, fmt.Errorf("sipmwi: MaxExpires %v below MinExpires %v", o.MaxExpires, o.MinExpires)
	}
	if o.MaxSubscriptions <= 0 {
		o.MaxSubscriptions = 10000
	}
	if o.MaxPerPeer <= 0 {
		o.MaxPerPeer = 64
	}
	if o.MaxPerMailbox <= 0 {
		o.MaxPerMailbox = 32
	}
	if o.MaxConnsPerPeer <= 0 {
		o.MaxConnsPerPeer = 16
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1024
	}
	if o.MaxPendingPerConn <= 0 {
		o.MaxPendingPerConn = 64
	}
	if o.TCPIdleTimeout <= 0 {
		o.TCPIdleTimeout = 3 * time.Minute
	}
	if o.TCPWriteTimeout <= 0 {
		o.TCPWriteTimeout = 5 * time.Second
	}
	if o.NotifyTimeout <= 0 {
		o.NotifyTimeout = 64 * sip.T1
	}
	if o.StateTimeout <= 0 {
		o.StateTimeout = 5 * time.Second
	}
	if o.UserAgent == "" {
		o.UserAgent = "um"
	}
	s.log = o.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	for mailbox, uris := range o.Contacts {
		for _, raw := range uris {
			var u sip.Uri
			if err := sip.ParseUri(raw, &u); err != nil || u.Host == "" {
				return nil, fmt.Errorf("sipmwi: contact %q of mailbox %s: %w", raw, mailbox, errors.Join(ErrBadContact, err))
			}
			s.contacts[mailbox] = append(s.contacts[mailbox], newContactDialog(mailbox, u))
		}
	}
	// sipgo logs a peer's garbage at Error; this package's log is the
	// host's, at the levels documented above.
	quiet := slog.New(slog.NewTextHandler(discard{}, nil))
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(o.UserAgent),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)))
	if err != nil {
		return nil, fmt.Errorf("sipmwi: %w", err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		ua.Close()
		return nil, fmt.Errorf("sipmwi: %w", err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientLogger(quiet))
	if err != nil {
		ua.Close()
		return nil, fmt.Errorf("sipmwi: %w", err)
	}
	s.ua, s.sip, s.client = ua, srv, client
	s.tcp = &tcpConns{perPeer: o.MaxConnsPerPeer, total: o.MaxConns, pending: o.MaxPendingPerConn,
		idle: o.TCPIdleTimeout, write: o.TCPWriteTimeout, keep: s.holdsSource,
		peers: make(map[string]int), byRemote: make(map[string]*tcpConn)}
	ua.TransportLayer().OnMessage(s.tcp.onMessage)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	srv.OnSubscribe(s.handleSubscribe)
	return s, nil
}

// ErrBadContact is returned by New for an entry of Options.Contacts that is
// not a SIP URI with a host.
var ErrBadContact = errors.New("sipmwi: bad contact URI")

// ErrClosed is returned by ServeUDP and ServeTCP after Close.
var ErrClosed = errors.New("sipmwi: server closed")

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// SIP returns the sipgo server underneath, so that a host can answer other
// methods (REGISTER, INVITE, OPTIONS) on the same address. Its SUBSCRIBE
// handler is this Server's; do not replace it.
func (s *Server) SIP() *sipgo.Server { return s.sip }

// Attach gives the server the Source it reads current states from (to
// answer a SUBSCRIBE) and sends every configured contact its current state.
// Until Attach, SUBSCRIBEs are answered 503 with Retry-After. It is separate
// from New because um.New wants the MWI hook (Update) before the Service
// exists.
func (s *Server) Attach(src Source) {
	s.mu.Lock()
	if s.closing || s.closed {
		s.mu.Unlock()
		return
	}
	s.source = src
	mailboxes := make([]string, 0, len(s.contacts))
	for mb := range s.contacts {
		mailboxes = append(mailboxes, mb)
	}
	s.mu.Unlock()
	if len(mailboxes) == 0 {
		return
	}
	s.senders.Add(1)
	go func() {
		defer s.senders.Done()
		for _, mb := range mailboxes {
			ctx, cancel := context.WithTimeout(s.ctx, s.opts.StateTimeout)
			st, err := src.MWI(ctx, mb)
			cancel()
			if err != nil {
				if !errors.Is(err, um.ErrNotFound) && s.ctx.Err() == nil {
					s.log.Warn("sipmwi: state for unsolicited NOTIFY", "mailbox", mb, "error", err)
				}
				continue
			}
			s.Update(st)
		}
	}()
}

// Update queues a NOTIFY of st to every subscribed dialog of st.Mailbox and
// to its configured contacts. It never blocks on the network: each dialog
// has a queue of one state, which a newer state replaces, so a phone that
// is slow or gone delays nobody and holds no backlog. Update has the
// signature of um.MWIFunc: put it in um.Options.MWI, or call it from the
// host's own hook.
func (s *Server) Update(st um.MWIState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.closed {
		return
	}
	for d := range s.byMailbox[st.Mailbox] {
		s.queueLocked(d, st)
	}
	for _, d := range s.contacts[st.Mailbox] {
		s.queueLocked(d, st)
	}
}

// ServeUDP serves SIP on conn until Close. NOTIFYs over UDP leave from conn
// and are retransmitted as RFC 3261 section 17.1.2 requires.
func (s *Server) ServeUDP(conn net.PacketConn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok && s.udpLocal == nil && !a.IP.IsUnspecified() {
		s.udpLocal = a
	}
	s.listeners = append(s.listeners, conn)
	s.mu.Unlock()
	err := s.sip.ServeUDP(conn)
	if s.isClosed() {
		return ErrClosed
	}
	return err
}

// ServeTCP serves SIP on ln until Close. NOTIFYs for a subscription made
// over TCP go back on the subscriber's connection. A peer holds at most
// MaxConnsPerPeer connections at once, and all peers together MaxConns;
// TCPIdleTimeout and TCPWriteTimeout close the connections of peers that
// fall silent or stop reading.
func (s *Server) ServeTCP(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()
	err := s.sip.ServeTCP(&limitListener{Listener: ln, conns: s.tcp})
	if s.isClosed() {
		return ErrClosed
	}
	return err
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Shutdown ends every subscription with a NOTIFY of Subscription-State:
// terminated;reason=deactivated (RFC 6665: subscribe again at once, for
// example to another node) and waits until they are sent or ctx is done,
// then closes the server.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for _, d := range s.dialogs {
		s.terminateLocked(d, "deactivated")
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.senders.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close stops the server at once: it drops every subscription without a
// NOTIFY, ends NOTIFYs in flight and closes the listeners and connections.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for _, d := range s.dialogs {
		s.removeLocked(d)
	}
	listeners := s.listeners
	s.mu.Unlock()
	s.cancel()
	for _, l := range listeners {
		l.Close()
	}
	// The connections close first: a NOTIFY or an answer blocked in a
	// write to a peer that does not read ends only when its connection
	// does, whatever its context says, and until then holds its
	// transaction's lock, which closing sipgo's transaction layer waits
	// for.
	err := s.ua.TransportLayer().Close()
	err = errors.Join(err, s.ua.Close())
	s.senders.Wait()
	return err
}

// holdsSource reports whether a subscription made over TCP from remote
// (an ip:port) is held: its connection is the way to its phone.
func (s *Server) holdsSource(remote string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bySource[remote] > 0
}

// peerOf returns the IP address a request came from, the key of the
// per-peer limit.
func peerOf(req *sip.Request) string {
	src := req.Source()
	if host, _, err := net.SplitHostPort(src); err == nil {
		return host
	}
	return strings.TrimSpace(src)
}

// Subscriptions returns how many subscriptions of mailbox are held, for a
// host's status page and for tests.
func (s *Server) Subscriptions(mailbox string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byMailbox[mailbox])
}
