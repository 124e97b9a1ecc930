package imapserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/loopback"
	"github.com/embeddedum/um/internal/selfsigned"
	"github.com/embeddedum/um/internal/testwait"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/google/uuid"
)

// countingStore counts the content bytes read through Open: the proof that
// a FETCH left the audio alone.
type countingStore struct {
	um.Store
	opens atomic.Int64
	read  atomic.Int64
}

// Unwrap lets the server find the optional interfaces of the store
// beneath (ModSeqer, FolderSubscriber).
func (s *countingStore) Unwrap() um.Store { return s.Store }

func (s *countingStore) Open(ctx context.Context, mailbox string, id uuid.UUID) (io.ReadCloser, error) {
	rc, err := s.Store.Open(ctx, mailbox, id)
	if err != nil {
		return nil, err
	}
	s.opens.Add(1)
	return &countingReader{rc: rc, n: &s.read}, nil
}

type countingReader struct {
	rc io.ReadCloser
	n  *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	r.n.Add(int64(n))
	return n, err
}

func (r *countingReader) Close() error { return r.rc.Close() }

type mwiLog struct {
	mu     sync.Mutex
	states []um.MWIState
	notify chan time.Time // when set, gets the time of each call
}

func (l *mwiLog) add(s um.MWIState) {
	l.mu.Lock()
	l.states = append(l.states, s)
	n := l.notify
	l.mu.Unlock()
	if n != nil {
		n <- time.Now()
	}
}

func (l *mwiLog) last(mailbox string) (um.MWIState, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := len(l.states) - 1; i >= 0; i-- {
		if l.states[i].Mailbox == mailbox {
			return l.states[i], true
		}
	}
	return um.MWIState{}, false
}

type env struct {
	t         testing.TB
	store     *countingStore
	svc       *um.Service
	srv       *Server
	mwi       *mwiLog
	plain     string // address of the STARTTLS listener
	tlsAddr   string // address of the implicit TLS listener
	clientTLS *tls.Config
	authCalls atomic.Int64
}

var users = map[string]struct{ password, mailbox string }{
	"alice": {"alice-pw", "1001"},
	"bob":   {"bob-pw", "1002"},
}

// newEnv starts a service on a counting memstore with mailboxes 1001
// (alice) and 1002 (bob), and a server on two loopback listeners.
func newEnv(t testing.TB, tune func(*Options)) *env {
	t.Helper()
	return newEnvWith(t, um.Options{}, tune)
}

// newEnvWith is newEnv with service options; MWI is set by the env.
func newEnvWith(t testing.TB, uo um.Options, tune func(*Options)) *env {
	t.Helper()
	return newEnvOn(t, nil, uo, tune)
}

// newEnvOn is newEnvWith with the service's store wrapped by wrap (nil:
// the counting store itself).
func newEnvOn(t testing.TB, wrap func(um.Store) um.Store, uo um.Options, tune func(*Options)) *env {
	t.Helper()
	e := &env{t: t, store: &countingStore{Store: memstore.New()}, mwi: &mwiLog{}}
	uo.MWI = e.mwi.add
	var store um.Store = e.store
	if wrap != nil {
		store = wrap(e.store)
	}
	svc, err := um.New(store, &uo)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	for _, u := range users {
		if _, err := svc.CreateMailbox(context.Background(), u.mailbox); err != nil {
			t.Fatal(err)
		}
	}
	cert, err := selfsigned.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	e.clientTLS = cert.ClientConfig("127.0.0.1")
	opts := &Options{
		Authenticate: func(ctx context.Context, username, password string) (string, error) {
			e.authCalls.Add(1)
			u, ok := users[username]
			if !ok || u.password != password {
				return "", errors.New("bad credentials")
			}
			return u.mailbox, nil
		},
		TLSConfig:         cert.ServerConfig(),
		LoginFailureDelay: -1,
	}
	if tune != nil {
		tune(opts)
	}
	srv, err := New(svc, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	l, err := loopback.Serve(srv)
	if err != nil {
		t.Fatal(err)
	}
	e.plain, e.tlsAddr = l.PlainAddr, l.TLSAddr
	t.Cleanup(func() {
		srv.Close()
		l.Wait()
		svc.Close()
	})
	return e
}

// dial connects over implicit TLS and logs in as user.
func (e *env) dial(user string, h *imapclient.UnilateralDataHandler) *imapclient.Client {
	e.t.Helper()
	c, err := imapclient.DialTLS(e.tlsAddr, &imapclient.Options{TLSConfig: e.clientTLS, UnilateralDataHandler: h})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	if err := c.Login(user, users[user].password).Wait(); err != nil {
		e.t.Fatalf("Login(%s) = %v", user, err)
	}
	return c
}

func (e *env) mailbox(name string) *um.Mailbox {
	e.t.Helper()
	mb, err := e.svc.Mailbox(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return mb
}

// silence returns a valid WAV file with n bytes of silence.
func silence(n int) []byte { return append(wav.Header(wav.Rate, n), make([]byte, n)...) }

func (e *env) deposit(mailbox, caller string, audioBytes int) um.Message {
	e.t.Helper()
	m, err := e.mailbox(mailbox).Deposit(context.Background(), um.Deposit{
		Audio: bytes.NewReader(silence(audioBytes)), CallerNumber: caller, Duration: 5 * time.Second,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (e *env) list(mailbox, folder string) []um.Message {
	e.t.Helper()
	msgs, err := e.mailbox(mailbox).List(context.Background(), folder)
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs
}

// waitFor polls cond until it holds; it fails the test after 10 s. It is
// for events that arrive asynchronously, not a timing assertion.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testwait.Until(t, 10*time.Second, 5*time.Millisecond, what, cond)
}

func codeOf(err error) imap.ResponseCode {
	var ie *imap.Error
	if errors.As(err, &ie) {
		return ie.Code
	}
	return ""
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func (l *mwiLog) setNotify(c chan time.Time) {
	l.mu.Lock()
	l.notify = c
	l.mu.Unlock()
}

func depositOf(audio []byte, caller string) um.Deposit {
	return um.Deposit{Audio: bytes.NewReader(audio), CallerNumber: caller, Duration: 3 * time.Second}
}

// feedStore makes the service one node of a cluster: Watch hands the test
// the function that delivers the other node's changes, and the test writes
// that node's changes straight into the store (env.store.Store), so they
// are committed but not yet announced here.
type feedStore struct {
	um.Store
	deliver chan func(um.Change)
}

func (s *feedStore) Watch(ctx context.Context, node string, deliver func(um.Change)) error {
	select {
	case s.deliver <- deliver:
	case <-ctx.Done():
		return ctx.Err()
	}
	<-ctx.Done()
	return ctx.Err()
}

// newClusterEnv is newEnv on a feedStore. It returns the function that
// delivers a change from the other node, "b", as the store's feed would.
func newClusterEnv(t testing.TB) (*env, func(um.Change)) {
	t.Helper()
	fs := &feedStore{deliver: make(chan func(um.Change), 1)}
	e := newEnvOn(t, func(s um.Store) um.Store { fs.Store = s; return fs }, um.Options{Node: "a"}, nil)
	deliver := <-fs.deliver
	return e, func(c um.Change) {
		c.Node = "b"
		if c.Mailbox == "" {
			c.Mailbox = "1001"
		}
		deliver(c)
	}
}

// remote is the underlying store, for writes of "another node" that this
// node hears of only when the test delivers them.
func (e *env) remote() um.Store { return e.store.Store }
