package imapserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/acceptwait"
	"github.com/embeddedum/um/internal/netpeer"
	"github.com/emersion/go-imap/v2"
)

// ErrServerClosed is returned by Serve and ServeTLS after Shutdown or Close.
var ErrServerClosed = errors.New("imapserver: server closed")

// Defaults of Options.
const (
	DefaultMaxConns          = 10000
	DefaultMaxConnsPerIP     = 100
	DefaultMaxConnsPerUser   = 20
	DefaultIdleTimeout       = 35 * time.Minute
	MinIdleTimeout           = 30 * time.Minute
	DefaultLoginTimeout      = 60 * time.Second
	DefaultAppendLimit       = 32 << 20
	DefaultMaxPreLoginBytes  = 128 << 10
	DefaultLoginFailureDelay = time.Second
	maxLoginFailuresPerConn  = 3
	loginFailureWindow       = 15 * time.Minute
)

// Options configure a Server. Authenticate is required; every other field
// has a working zero value, given in its comment.
type Options struct {
	// Authenticate checks a client's credentials and returns the name of the
	// voice mailbox the session may use. It runs on the connection's
	// goroutine, may block (a database or LDAP look-up), and must return
	// when ctx is done. A failed login must return a non-nil error; the
	// error text is logged, never sent to the client. Required.
	Authenticate func(ctx context.Context, username, password string) (mailbox string, err error)
	// TLSConfig serves STARTTLS on Serve's connections and implicit TLS on
	// ServeTLS's; a client that opens a Serve connection with a TLS
	// ClientHello gets implicit TLS there too. MinVersion is raised to TLS
	// 1.2, and TLS 1.2 is offered with AEAD cipher suites only (AES-GCM,
	// ChaCha20-Poly1305: of CipherSuites when set, else of Go's defaults).
	// Nil disables STARTTLS and ServeTLS.
	TLSConfig *tls.Config
	// InsecureAuth allows LOGIN and AUTHENTICATE before TLS (loopback
	// experiments only: passwords then cross the network in clear). By
	// default a connection without TLS gets LOGINDISABLED.
	InsecureAuth bool
	// Domain is the mail domain of rendered voicemail (From and Message-ID).
	// Default um.DefaultDomain.
	Domain string
	// MaxConns caps open connections; MaxConnsPerIP those from one remote
	// address (an IPv6 peer's whole /64, which one host is commonly given,
	// counts as one); MaxConnsPerUser the logged-in sessions of one voice
	// mailbox.
	// Zero means the Default...; negative means no cap.
	MaxConns, MaxConnsPerIP, MaxConnsPerUser int
	// IdleTimeout ends a logged-in connection that sends nothing for this
	// long (an IDLE command included: clients re-issue it). Default
	// DefaultIdleTimeout; values under MinIdleTimeout (RFC 9051's 30
	// minutes) are raised to it.
	IdleTimeout time.Duration
	// LoginTimeout is the time a connection has from accept to a successful
	// login, whatever it sends meanwhile. Default DefaultLoginTimeout.
	LoginTimeout time.Duration
	// AppendLimit caps the size of a message a client may APPEND
	// (advertised as APPENDLIMIT). Default DefaultAppendLimit.
	AppendLimit uint32
	// MaxPreLoginBytes caps the bytes read from a connection before it logs
	// in, TLS handshake included; past it the connection is closed. It
	// bounds the memory an unauthenticated client can make the server hold.
	// Default DefaultMaxPreLoginBytes.
	MaxPreLoginBytes int
	// LoginFailureDelay is the penalty of a failed login, in the manner of
	// Dovecot's auth penalty, counted both per remote address and per
	// account (user name): the first failure is answered after this delay,
	// and it doubles with each further failure of that address or that
	// account within 15 minutes (the larger count counts), up to 16 times
	// its value. The logins of one account are checked one at a time, and
	// the penalty of a failure is served before the next check of that
	// account, so guesses spread over many addresses and connections are
	// slowed as much as guesses from one: with the default, a 4-digit PIN
	// takes more than 40 hours to try. While an account is under attack its
	// own logins wait their turn too (each within LoginTimeout). A
	// connection is closed after 3 failures. Default
	// DefaultLoginFailureDelay; negative means no delay.
	LoginFailureDelay time.Duration
	// RenderCacheBytes bounds the memory of the server-wide cache of
	// rendered messages (header bytes, encoded ENVELOPE and BODYSTRUCTURE,
	// where the parts of an appended e-mail lie; keyed by message ID and
	// voice mailbox; least recently used first out), which saves every
	// session from re-rendering and re-parsing the messages it fetches.
	// Default DefaultRenderCacheBytes (3 MiB, about 550 voicemails or 1,500
	// appended e-mails); negative disables the cache. Sessions keep the
	// renderings of their selected folder's messages they used
	// regardless.
	RenderCacheBytes int
	// Logger receives the server's log records: client faults (a reset
	// connection, a bad TLS record, a refused command) at Debug, server
	// faults at Warn and Error, with the attributes mailbox, folder and
	// remote. It never receives passwords or message content. Nil means
	// slog.Default(), unless Logf is set.
	Logger *slog.Logger
	// Logf is superseded by Logger and kept so that hosts written for it
	// still build: when Logger is nil and Logf is set, records at Warn and
	// above go to Logf as text. Default: nil.
	Logf func(format string, args ...any)
}

// Stats are counters of a Server since New.
type Stats struct {
	Conns         int    // connections open now
	Sessions      int    // logged-in sessions now
	LoginFailures uint64 // failed logins
	Rejected      uint64 // connections refused by MaxConns or MaxConnsPerIP
	Overruns      uint64 // connections closed for passing MaxPreLoginBytes
	// Commands counts the commands run since New by name ("FETCH", "UID
	// FETCH") and result ("OK", "NO", "BAD").
	Commands map[CommandResult]uint64
	// RenderCacheHits and RenderCacheMisses count the lookups of rendered
	// messages (for FETCH) that the render cache answered, and those it
	// had to render.
	RenderCacheHits, RenderCacheMisses uint64
}

// CommandResult is a key of Stats.Commands.
type CommandResult struct {
	Name   string // upper case, "UID FETCH" for UID commands
	Result string // OK, NO or BAD
}

// Server serves the voice mailboxes of a um.Service over IMAP. It is safe
// for concurrent use.
type Server struct {
	svc     *um.Service
	opts    Options
	render  um.RenderOptions
	cache   *renderCache
	tlsConf *tls.Config
	log     *slog.Logger
	modSeqs um.ModSeqer                                // nil: no CONDSTORE or QRESYNC
	subs    um.FolderSubscriber                        // nil: every folder counts as subscribed
	sleep   func(ctx context.Context, d time.Duration) // replaced in tests
	recent  recentTable                                // which messages sessions took as \Recent

	ctx    context.Context // canceled by Close
	cancel context.CancelFunc

	loginFailures atomic.Uint64
	rejected      atomic.Uint64
	overruns      atomic.Uint64

	mu        sync.Mutex
	closing   bool
	listeners map[net.Listener]struct{}
	conns     map[*netConn]struct{}
	perIP     map[string]int
	perUser   map[string]int
	fails     map[string]*failRecord  // by remote IP
	userFails map[string]*failRecord  // by user name, lower case
	gates     map[string]*accountGate // by user name, lower case
	idle      chan struct{}           // closed when conns empties during shutdown
	commands  map[CommandResult]uint64
}

type failRecord struct {
	n    int
	last time.Time
}

// New returns a Server for svc. It does not listen: call Serve or ServeTLS.
func New(svc *um.Service, opts *Options) (*Server, error) {
	if svc == nil || opts == nil || opts.Authenticate == nil {
		return nil, fmt.Errorf("imapserver: %w: a service and Options.Authenticate are required", um.ErrInvalid)
	}
	s := &Server{
		svc:       svc,
		opts:      *opts,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*netConn]struct{}),
		perIP:     make(map[string]int),
		perUser:   make(map[string]int),
		fails:     make(map[string]*failRecord),
		userFails: make(map[string]*failRecord),
		gates:     make(map[string]*accountGate),
		commands:  make(map[CommandResult]uint64),
		sleep:     sleepCtx,
	}
	o := &s.opts
	o.MaxConns = defaultInt(o.MaxConns, DefaultMaxConns)
	o.MaxConnsPerIP = defaultInt(o.MaxConnsPerIP, DefaultMaxConnsPerIP)
	o.MaxConnsPerUser = defaultInt(o.MaxConnsPerUser, DefaultMaxConnsPerUser)
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	o.IdleTimeout = max(o.IdleTimeout, MinIdleTimeout)
	if o.LoginTimeout <= 0 {
		o.LoginTimeout = DefaultLoginTimeout
	}
	if o.AppendLimit == 0 {
		o.AppendLimit = DefaultAppendLimit
	}
	if o.MaxPreLoginBytes <= 0 {
		o.MaxPreLoginBytes = DefaultMaxPreLoginBytes
	}
	if o.LoginFailureDelay == 0 {
		o.LoginFailureDelay = DefaultLoginFailureDelay
	}
	switch {
	case o.Logger != nil:
		s.log = o.Logger
	case o.Logf != nil:
		s.log = slog.New(logfHandler{o.Logf, nil})
	default:
		s.log = slog.Default()
	}
	s.render = um.RenderOptions{Domain: o.Domain}
	if o.RenderCacheBytes == 0 {
		o.RenderCacheBytes = DefaultRenderCacheBytes
	}
	s.cache = newRenderCache(int64(o.RenderCacheBytes))
	// The Service fills in what its Options.Render sets (time zone, wording,
	// domain), so clients see voicemail as the sync engine and forwarding
	// render it.
	s.cache.render = svc.RenderEmail
	if o.TLSConfig != nil {
		s.tlsConf = o.TLSConfig.Clone()
		s.tlsConf.MinVersion = max(s.tlsConf.MinVersion, tls.VersionTLS12)
		s.tlsConf.CipherSuites = aeadSuites(s.tlsConf.CipherSuites)
	}
	s.modSeqs = s.modSeqer()
	s.subs, _ = um.StoreAs[um.FolderSubscriber](svc.Store())
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

func defaultInt(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return int(^uint(0) >> 1)
	}
	return v
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (s *Server) logger() *slog.Logger { return s.log }

// logf logs a server fault.
func (s *Server) logf(format string, args ...any) { s.log.Warn(fmt.Sprintf(format, args...)) }

// Serve accepts plain connections on ln and serves them, offering STARTTLS
// when Options.TLSConfig is set. It returns ErrServerClosed after Shutdown
// or Close, or the error that made Accept fail.
func (s *Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS accepts connections on ln and serves them over implicit TLS (port
// 993). It needs Options.TLSConfig.
func (s *Server) ServeTLS(ln net.Listener) error {
	if s.tlsConf == nil {
		return fmt.Errorf("imapserver: %w: ServeTLS needs Options.TLSConfig", um.ErrInvalid)
	}
	return s.serve(ln, true)
}

func (s *Server) serve(ln net.Listener, implicitTLS bool) error {
	l := &listener{Listener: ln, srv: s, tls: implicitTLS}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	err := s.acceptLoop(l)
	s.mu.Lock()
	delete(s.listeners, l)
	closing := s.closing
	s.mu.Unlock()
	if closing {
		return ErrServerClosed
	}
	return err
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	sessions := 0
	for _, n := range s.perUser {
		sessions += n
	}
	return Stats{
		Conns:         len(s.conns),
		Sessions:      sessions,
		LoginFailures: s.loginFailures.Load(),
		Rejected:      s.rejected.Load(),
		Overruns:      s.overruns.Load(),
		Commands:      maps.Clone(s.commands),

		RenderCacheHits:   s.cache.hits.Load(),
		RenderCacheMisses: s.cache.misses.Load(),
	}
}

// Shutdown stops accepting connections, then ends each connection with
// "* BYE" once its current command has finished (an IDLE ends at once), and
// returns when all are closed. When ctx is done first, it closes the rest
// as Close does and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	if s.idle == nil {
		s.idle = make(chan struct{})
		if len(s.conns) == 0 {
			close(s.idle)
		}
	}
	idle := s.idle
	conns := make([]*netConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.startShutdown()
	}
	select {
	case <-idle:
		s.Close()
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close closes the listeners and every connection at once, and cancels
// the work of their sessions. It does not close the um.Service.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*netConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.cancel()
	for _, c := range conns {
		c.abort()
	}
	return nil
}

// listener counts connections and refuses those over the caps before
// the engine sees them.
type listener struct {
	net.Listener
	srv  *Server
	tls  bool
	once sync.Once
}

func (l *listener) Close() error {
	var err error
	l.once.Do(func() { err = l.Listener.Close() })
	return err
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		nc, ok := l.srv.admit(c)
		if !ok {
			if !l.tls {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write([]byte("* BYE [UNAVAILABLE] Too many connections\r\n"))
			}
			c.Close()
			continue
		}
		return nc, nil
	}
}

func remoteIP(c net.Conn) string {
	addr := c.RemoteAddr()
	if addr == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	return host
}

func (s *Server) admit(c net.Conn) (*netConn, bool) {
	peer := netpeer.Key(c.RemoteAddr())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || len(s.conns) >= s.opts.MaxConns || s.perIP[peer] >= s.opts.MaxConnsPerIP {
		s.rejected.Add(1)
		return nil, false
	}
	nc := newNetConn(c, s, remoteIP(c))
	nc.peer = peer
	s.conns[nc] = struct{}{}
	s.perIP[peer]++
	return nc, true
}

func (s *Server) release(nc *netConn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.conns[nc]; !ok {
		return
	}
	delete(s.conns, nc)
	if s.perIP[nc.peer]--; s.perIP[nc.peer] <= 0 {
		delete(s.perIP, nc.peer)
	}
	if len(s.conns) == 0 && s.idle != nil {
		select {
		case <-s.idle:
		default:
			close(s.idle)
		}
	}
}

// claimUser counts a logged-in session of mailbox, or refuses it.
func (s *Server) claimUser(mailbox string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perUser[mailbox] >= s.opts.MaxConnsPerUser {
		return false
	}
	s.perUser[mailbox]++
	return true
}

func (s *Server) releaseUser(mailbox string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perUser[mailbox]--; s.perUser[mailbox] <= 0 {
		delete(s.perUser, mailbox)
	}
}

// loginFailed counts a failure from ip for user and returns how long to
// wait before answering it.
func (s *Server) loginFailed(peer, user string) time.Duration {
	s.loginFailures.Add(1)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := max(countFailure(s.fails, peer, now), countFailure(s.userFails, strings.ToLower(user), now))
	if s.opts.LoginFailureDelay < 0 {
		return 0
	}
	return s.opts.LoginFailureDelay << min(n-1, 4)
}

// countFailure counts a failure of key in fails, forgetting those older
// than the window, and returns the count.
func countFailure(fails map[string]*failRecord, key string, now time.Time) int {
	for k, r := range fails {
		if now.Sub(r.last) > loginFailureWindow {
			delete(fails, k)
		}
	}
	r := fails[key]
	if r == nil {
		r = &failRecord{}
		fails[key] = r
	}
	r.n++
	r.last = now
	return r.n
}

// accountGate lets one login of an account be checked at a time.
type accountGate struct {
	ch    chan struct{}
	users int // waiting or holding; the gate is dropped at 0
}

// lockAccount waits for the turn of user's login, or for ctx. The returned
// function ends the turn.
func (s *Server) lockAccount(ctx context.Context, user string) (func(), error) {
	key := strings.ToLower(user)
	s.mu.Lock()
	g := s.gates[key]
	if g == nil {
		g = &accountGate{ch: make(chan struct{}, 1)}
		s.gates[key] = g
	}
	g.users++
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		if g.users--; g.users == 0 {
			delete(s.gates, key)
		}
		s.mu.Unlock()
	}
	select {
	case g.ch <- struct{}{}:
		return func() { <-g.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// acceptLoop serves each connection l accepts on a goroutine of its own.
// acceptLoop serves l's connections until l fails; a shortage of
// descriptors is waited out (internal/acceptwait).
func (s *Server) acceptLoop(l *listener) error {
	var b acceptwait.Backoff
	for {
		c, err := l.Accept()
		if err != nil {
			wait, ok := b.Next(err)
			if !ok {
				return err
			}
			s.log.Warn("imapserver: accept failed, trying again", "wait", wait, "error", err)
			time.Sleep(wait)
			continue
		}
		b.Reset()
		go s.serveConn(c.(*netConn), l.tls)
	}
}

// countCommand counts a command for Stats.
func (s *Server) countCommand(name string, err error) {
	if name == "" {
		return
	}
	res := "OK"
	var pe *protoError
	var ie *imap.Error
	switch {
	case errors.As(err, &pe):
		res = string(pe.typ)
	case errors.As(err, &ie):
		res = string(ie.Type)
	case err != nil && !errors.Is(err, errLogout):
		res = "BAD"
	}
	if len(name) > 20 || !knownCommands[name] {
		name = "OTHER"
	}
	s.mu.Lock()
	s.commands[CommandResult{name, res}]++
	s.mu.Unlock()
}

var knownCommands = map[string]bool{}

func init() {
	for _, n := range strings.Fields("CAPABILITY NOOP LOGOUT ID STARTTLS LOGIN AUTHENTICATE ENABLE SELECT EXAMINE CREATE DELETE RENAME SUBSCRIBE UNSUBSCRIBE LIST LSUB NAMESPACE STATUS APPEND IDLE GETQUOTA GETQUOTAROOT SETQUOTA CHECK CLOSE UNSELECT EXPUNGE SEARCH FETCH STORE COPY MOVE") {
		knownCommands[n] = true
		knownCommands["UID "+n] = true
	}
}

var errAuthFailed = &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed, Text: "Authentication failed"}

// logfHandler sends records at Warn and above to a printf-style function.
type logfHandler struct {
	logf  func(string, ...any)
	attrs []slog.Attr
}

func (h logfHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h logfHandler) Handle(_ context.Context, r slog.Record) error {
	var sb strings.Builder
	sb.WriteString(r.Message)
	for _, a := range h.attrs {
		sb.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool { sb.WriteString(" " + a.String()); return true })
	h.logf("%s", sb.String())
	return nil
}

func (h logfHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logfHandler{h.logf, append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h logfHandler) WithGroup(string) slog.Handler { return h }

// aeadSuites keeps the AEAD suites of TLS 1.2 among suites (Go's secure
// defaults when empty): CBC modes with SHA-1 MACs are out.
func aeadSuites(suites []uint16) []uint16 {
	if len(suites) == 0 {
		for _, cs := range tls.CipherSuites() {
			suites = append(suites, cs.ID)
		}
	}
	var out []uint16
	for _, id := range suites {
		name := tls.CipherSuiteName(id)
		if strings.Contains(name, "_GCM_") || strings.Contains(name, "CHACHA20_POLY1305") {
			out = append(out, id)
		}
	}
	return out
}
