package upstream_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/internal/testwait"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/upstream"
	"github.com/embeddedum/um/wav"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/google/uuid"
)

// startDovecot starts Dovecot with users, each with the password
// pass<name>, offering OAUTHBEARER and XOAUTH2 besides PLAIN. A missing
// dovecot binary fails the test: the sync engine's tests need it.
func startDovecot(tb testing.TB, users ...string) *dovecot.Server {
	tb.Helper()
	pw := make(map[string]string, len(users))
	for _, u := range users {
		pw[u] = "pass" + u
	}
	d, err := dovecot.Start(dovecot.Options{
		Dir:            tb.TempDir(),
		Users:          pw,
		AuthMechanisms: "plain login oauthbearer xoauth2",
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(d.Stop)
	return d
}

// env is a um service with an MWI hook, a sync engine and a Dovecot.
type env struct {
	tb       testing.TB
	d        *dovecot.Server
	svc      *um.Service
	store    *memstore.Store
	stateDir string
	eng      *upstream.Engine

	opts upstream.Options

	mu  sync.Mutex
	mwi map[string]um.MWIState
}

// testOptions are the engine options of the tests: short backoffs, so a
// reconnect comes soon.
var testOptions = upstream.Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, PollInterval: time.Second}

func newEnv(tb testing.TB, d *dovecot.Server) *env { return newEnvHook(tb, d, nil) }

// newEnvHook is newEnv with an extra MWI hook.
func newEnvHook(tb testing.TB, d *dovecot.Server, hook func(um.MWIState)) *env {
	return newEnvOpts(tb, d, testOptions, hook)
}

// newEnvOpts is newEnvHook with the engine's options.
func newEnvOpts(tb testing.TB, d *dovecot.Server, opts upstream.Options, hook func(um.MWIState)) *env {
	tb.Helper()
	e := &env{tb: tb, d: d, stateDir: tb.TempDir(), opts: opts, mwi: make(map[string]um.MWIState)}
	e.store = memstore.New()
	svc, err := um.New(e.store, &um.Options{MWI: func(s um.MWIState) {
		e.mu.Lock()
		e.mwi[s.Mailbox] = s
		e.mu.Unlock()
		if hook != nil {
			hook(s)
		}
	}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { svc.Close() })
	e.svc = svc
	e.startEngine()
	return e
}

// startEngine starts a new engine over the same service and state
// directory, as a restarted PBX would.
func (e *env) startEngine() *upstream.Engine {
	e.tb.Helper()
	st, err := upstream.NewFileState(e.stateDir)
	if err != nil {
		e.tb.Fatal(err)
	}
	opts := e.opts
	eng, err := upstream.New(e.svc, st, &opts)
	if err != nil {
		e.tb.Fatal(err)
	}
	e.eng = eng
	e.tb.Cleanup(func() { eng.Close() })
	return eng
}

func (e *env) lastMWI(mailbox string) (um.MWIState, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.mwi[mailbox]
	return s, ok
}

func (e *env) config(mailbox, folder string) upstream.Config {
	return upstream.Config{
		Mailbox:     mailbox,
		Addr:        e.d.Addr,
		Security:    upstream.StartTLS,
		TLSConfig:   e.d.TLSConfig(),
		Username:    mailbox,
		Credentials: upstream.Password("pass" + mailbox),
		Folder:      folder,
	}
}

// sync adds mailbox to the engine and waits for its first complete sync.
func (e *env) sync(mailbox, folder string) *um.Mailbox {
	e.tb.Helper()
	ctx := context.Background()
	mb, err := e.svc.EnsureMailbox(ctx, mailbox)
	if err != nil {
		e.tb.Fatal(err)
	}
	if err := e.eng.Add(ctx, e.config(mailbox, folder)); err != nil {
		e.tb.Fatal(err)
	}
	e.waitSynced(mailbox)
	return mb
}

// waitSynced waits until a full sync of mailbox succeeded.
func (e *env) waitSynced(mailbox string) {
	e.tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := e.eng.Sync(ctx, mailbox)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.tb.Fatalf("sync of %s: %v (status %+v)", mailbox, err, e.eng.Status(mailbox))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventually polls cond for up to 20 s.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	eventuallyShow(tb, what, cond, nil)
}

// eventuallyShow is eventually that, on timeout, adds what show reports.
func eventuallyShow(tb testing.TB, what string, cond func() bool, show func() string) {
	tb.Helper()
	testwait.UntilShow(tb, 20*time.Second, 10*time.Millisecond, what, cond, show)
}

func deposit(tb testing.TB, mb *um.Mailbox, caller string) um.Message {
	tb.Helper()
	m, err := mb.Deposit(context.Background(), um.Deposit{Audio: bytes.NewReader(wav.Tone(50 * time.Millisecond)), CallerNumber: caller, Duration: 3 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// mailClient is the user's own mail client at the Dovecot.
type mailClient struct {
	tb testing.TB
	c  *imapclient.Client
}

func newMailClient(tb testing.TB, d *dovecot.Server, user string) *mailClient {
	tb.Helper()
	return &mailClient{tb: tb, c: dialUser(tb, d, user, nil)}
}

// dialUser connects to the Dovecot over implicit TLS as user, with h (when
// not nil) given the responses the server sends unasked.
func dialUser(tb testing.TB, d *dovecot.Server, user string, h *imapclient.UnilateralDataHandler) *imapclient.Client {
	tb.Helper()
	c, err := imapclient.DialTLS(d.TLSAddr, &imapclient.Options{TLSConfig: d.TLSConfig(), UnilateralDataHandler: h})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	if err := c.Authenticate(sasl.NewPlainClient("", user, "pass"+user)); err != nil {
		tb.Fatal(err)
	}
	return c
}

func (mc *mailClient) sel(folder string) *imap.SelectData {
	mc.tb.Helper()
	d, err := mc.c.Select(folder, nil).Wait()
	if err != nil {
		mc.tb.Fatalf("select %s: %v", folder, err)
	}
	return d
}

// find returns the UIDs of the copies of id in folder.
func (mc *mailClient) find(folder string, id uuid.UUID) []imap.UID {
	mc.tb.Helper()
	mc.sel(folder)
	sd, err := mc.c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "X-Um-Message-Id", Value: id.String()}}}, nil).Wait()
	if err != nil {
		mc.tb.Fatal(err)
	}
	return sd.AllUIDs()
}

func (mc *mailClient) flags(folder string, uid imap.UID) []imap.Flag {
	mc.tb.Helper()
	mc.sel(folder)
	bufs, err := mc.c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{Flags: true, UID: true}).Collect()
	if err != nil || len(bufs) != 1 {
		mc.tb.Fatalf("fetch flags of %d: %v (%d results)", uid, err, len(bufs))
	}
	return bufs[0].Flags
}

func (mc *mailClient) store(folder string, uid imap.UID, op imap.StoreFlagsOp, flags ...imap.Flag) {
	mc.tb.Helper()
	mc.sel(folder)
	if err := mc.c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: op, Silent: true, Flags: flags}, nil).Close(); err != nil {
		mc.tb.Fatal(err)
	}
}

// appendMail puts one of the user's ordinary e-mails in folder.
func (mc *mailClient) appendMail(folder, subject string, flags ...imap.Flag) {
	mc.tb.Helper()
	msg := "From: a@example.com\r\nTo: b@example.com\r\nSubject: " + subject + "\r\n\r\nHello.\r\n"
	cmd := mc.c.Append(folder, int64(len(msg)), &imap.AppendOptions{Flags: flags})
	cmd.Write([]byte(msg))
	cmd.Close()
	if _, err := cmd.Wait(); err != nil {
		mc.tb.Fatal(err)
	}
}

func (mc *mailClient) count(folder string) uint32 {
	mc.tb.Helper()
	return mc.sel(folder).NumMessages
}

func hasFlag(flags []imap.Flag, f imap.Flag) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}

func isNotFound(err error) bool { return errors.Is(err, um.ErrNotFound) }
