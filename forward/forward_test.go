package forward_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/forward"
	"github.com/embeddedum/um/internal/smtptest"
	"github.com/embeddedum/um/internal/testwait"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/upstream"
	wavfile "github.com/embeddedum/um/wav"
)

// smtpServer is the test SMTP server, accepting mail from pbx with
// password secret, with what the tests here ask of it.
type smtpServer struct{ *smtptest.Server }

func startSMTP(tb testing.TB) *smtpServer {
	tb.Helper()
	return &smtpServer{smtptest.Start(tb, "pbx", "secret")}
}

// wav is the recording the tests deposit: 2 s, as their Duration says.
func wav() []byte { return wavfile.Tone(2 * time.Second) }

type fixture struct {
	svc  *um.Service
	smtp *smtpServer
	fw   *forward.Forwarder
	mu   sync.Mutex
	mwi  map[string]um.MWIState
}

func newFixture(tb testing.TB, mutate func(*forward.Options)) *fixture {
	tb.Helper()
	return newFixtureOn(tb, memstore.New(), mutate)
}

// newFixtureOn is newFixture on store.
func newFixtureOn(tb testing.TB, store um.Store, mutate func(*forward.Options)) *fixture {
	tb.Helper()
	fx := &fixture{smtp: startSMTP(tb), mwi: make(map[string]um.MWIState)}
	svc, err := um.New(store, &um.Options{MWI: func(s um.MWIState) {
		fx.mu.Lock()
		fx.mwi[s.Mailbox] = s
		fx.mu.Unlock()
	}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { svc.Close() })
	fx.svc = svc
	opts := forward.Options{
		Addr: fx.smtp.Addr, TLSConfig: &tls.Config{RootCAs: fx.smtp.Roots},
		Username: "pbx", Password: "secret", From: "voicemail@pbx.example.com",
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	}
	if mutate != nil {
		mutate(&opts)
	}
	fw, err := forward.New(svc, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { fw.Close() })
	fx.fw = fw
	return fx
}

func (fx *fixture) deposit(tb testing.TB, mb *um.Mailbox, caller string) um.Message {
	tb.Helper()
	m, err := mb.Deposit(context.Background(), um.Deposit{Audio: bytes.NewReader(wav()), CallerNumber: caller, Duration: 2 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	testwait.Until(tb, 10*time.Second, 5*time.Millisecond, what, cond)
}

func TestForward(t *testing.T) {
	fx := newFixture(t, nil)
	ctx := context.Background()
	mb, _ := fx.svc.CreateMailbox(ctx, "1001")
	other, _ := fx.svc.CreateMailbox(ctx, "1002")
	before := fx.deposit(t, mb, "before") // deposited before forwarding: not sent
	if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: `"Bob" <bob@example.com>`, MarkHeard: true}); err != nil {
		t.Fatal(err)
	}
	m := fx.deposit(t, mb, "+4930123456")
	fx.deposit(t, other, "not forwarded")
	eventually(t, "forwarded", func() bool { return len(fx.smtp.Messages()) == 1 && fx.fw.Status("1001").Sent == 1 })

	got := fx.smtp.Messages()[0]
	if got.From != "voicemail@pbx.example.com" || got.To != "bob@example.com" || got.User != "pbx" || !got.TLS {
		t.Fatalf("envelope = from %q to %q user %q tls %v", got.From, got.To, got.User, got.TLS)
	}
	want := um.RenderEmail(m, um.RenderOptions{To: `"Bob" <bob@example.com>`, Mailbox: "1001"})
	var wantBytes bytes.Buffer
	if _, err := want.WriteTo(&wantBytes, bytes.NewReader(wav())); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Data, wantBytes.Bytes()) {
		t.Fatalf("forwarded bytes differ from the rendered voicemail (%d vs %d bytes)", len(got.Data), wantBytes.Len())
	}
	if !strings.Contains(string(got.Data), "X-Um-Message-Id: "+m.ID.String()) {
		t.Fatalf("forwarded mail lacks X-Um-Message-Id")
	}
	eventually(t, "marked heard", func() bool {
		g, err := mb.Message(ctx, m.ID)
		return err == nil && g.Heard()
	})
	fx.svc.FlushMWI()
	fx.mu.Lock()
	st := fx.mwi["1001"]
	fx.mu.Unlock()
	if st.New != 1 || st.Old != 1 { // "before" is still new
		t.Fatalf("MWI = %v, want 1 new (the message deposited before forwarding), 1 old", st)
	}

	// An undelete (a move back to INBOX) is not a new voicemail.
	if err := mb.Delete(ctx, before.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Undelete(ctx, before.ID); err != nil {
		t.Fatal(err)
	}
	m3 := fx.deposit(t, mb, "third")
	eventually(t, "third forwarded", func() bool { return len(fx.smtp.Messages()) == 2 })
	if !strings.Contains(string(fx.smtp.Messages()[1].Data), m3.ID.String()) {
		t.Fatalf("second forwarded mail is not the third deposit (an undelete was forwarded?)")
	}
}

// TestForwardRetry: temporary refusals (451) are waited out however many
// there are; MaxAttempts counts only permanent ones.
func TestForwardRetry(t *testing.T) {
	fx := newFixture(t, func(o *forward.Options) { o.MaxAttempts = 2 })
	fx.smtp.FailData(4)
	ctx := context.Background()
	mb, _ := fx.svc.CreateMailbox(ctx, "1001")
	if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	fx.deposit(t, mb, "x")
	eventually(t, "sent after retries", func() bool { return fx.fw.Status("1001").Sent == 1 })
	if n := len(fx.smtp.Messages()); n != 1 {
		t.Fatalf("accepted messages = %d, want 1", n)
	}
	if s := fx.fw.Status("1001"); s.Failed != 0 || s.LastError != nil || s.Pending {
		t.Fatalf("Status() = %+v", s)
	}
}

func TestForwardBadPassword(t *testing.T) {
	fx := newFixture(t, func(o *forward.Options) { o.Password = "wrong"; o.MaxAttempts = 2 })
	ctx := context.Background()
	mb, _ := fx.svc.CreateMailbox(ctx, "1001")
	if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com", MarkHeard: true}); err != nil {
		t.Fatal(err)
	}
	m := fx.deposit(t, mb, "x")
	eventually(t, "given up", func() bool { return fx.fw.Status("1001").Failed == 1 })
	if s := fx.fw.Status("1001"); s.LastError == nil || s.Sent != 0 {
		t.Fatalf("Status() = %+v, want the AUTH error", s)
	}
	if g, _ := mb.Message(ctx, m.ID); g.Heard() {
		t.Fatalf("marked heard though not sent")
	}
}

func TestForwardUntrustedCertificate(t *testing.T) {
	fx := newFixture(t, func(o *forward.Options) { o.TLSConfig = nil; o.MaxAttempts = 1 })
	ctx := context.Background()
	mb, _ := fx.svc.CreateMailbox(ctx, "1001")
	if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	fx.deposit(t, mb, "x")
	eventually(t, "refused", func() bool { return fx.fw.Status("1001").Failed == 1 })
	var uerr x509.UnknownAuthorityError
	if err := fx.fw.Status("1001").LastError; !errors.As(err, &uerr) {
		t.Fatalf("LastError = %v, want an unknown-authority certificate error", err)
	}
	if n := len(fx.smtp.Messages()); n != 0 {
		t.Fatalf("sent %d messages to an unverified server", n)
	}
}

// TestModeConflict: a mailbox is forwarded or synced, not both, whichever
// is configured first.
func TestModeConflict(t *testing.T) {
	fx := newFixture(t, nil)
	ctx := context.Background()
	fx.svc.CreateMailbox(ctx, "1001")
	fx.svc.CreateMailbox(ctx, "1002")
	eng, err := upstream.New(fx.svc, mustFileState(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	imapCfg := func(mb string) upstream.Config {
		// Never reached: the claim is checked before any connection.
		return upstream.Config{Mailbox: mb, Addr: "127.0.0.1:1", Username: mb, Credentials: upstream.Password("x")}
	}

	if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "a@example.com"}); err != nil {
		t.Fatal(err)
	}
	if err := eng.Add(ctx, imapCfg("1001")); !errors.Is(err, um.ErrModeConflict) || !strings.Contains(err.Error(), "email-forward") {
		t.Fatalf("sync of a forwarded mailbox: Add() = %v, want ErrModeConflict naming email-forward", err)
	}
	if err := eng.Add(ctx, imapCfg("1002")); err != nil {
		t.Fatal(err)
	}
	if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1002", To: "a@example.com"}); !errors.Is(err, um.ErrModeConflict) || !strings.Contains(err.Error(), "imap-sync") {
		t.Fatalf("forwarding a synced mailbox: Add() = %v, want ErrModeConflict naming imap-sync", err)
	}
	// Removing one mode frees the mailbox for the other.
	if err := fx.fw.Remove("1001"); err != nil {
		t.Fatal(err)
	}
	if err := eng.Add(ctx, imapCfg("1001")); err != nil {
		t.Fatalf("sync after forwarding was removed: %v", err)
	}
}

func mustFileState(tb testing.TB) upstream.StateStore {
	st, err := upstream.NewFileState(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return st
}

// refuse makes the SMTP server answer every DATA with 451 (refuse true)
// or accept again.
func (s *smtpServer) refuse(refuse bool) {
	n := 0
	if refuse {
		n = 1 << 30
	}
	s.FailData(n)
}

// ids returns the X-Um-Message-Id of every accepted message, in order.
func (s *smtpServer) ids(tb testing.TB) []string {
	tb.Helper()
	var out []string
	for _, r := range s.Messages() {
		_, rest, ok := strings.Cut(string(r.Data), "X-Um-Message-Id: ")
		if !ok {
			tb.Fatalf("accepted message without X-Um-Message-Id")
		}
		id, _, _ := strings.Cut(rest, "\r\n")
		out = append(out, id)
	}
	return out
}

// newForwarder starts another Forwarder on fx's service and SMTP server,
// as a restarted process would.
func (fx *fixture) newForwarder(tb testing.TB, stateDir string) *forward.Forwarder {
	tb.Helper()
	fw, err := forward.New(fx.svc, forward.Options{
		Addr: fx.smtp.Addr, TLSConfig: &tls.Config{RootCAs: fx.smtp.Roots},
		Username: "pbx", Password: "secret", From: "voicemail@pbx.example.com",
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		MaxAttempts: 1 << 20, StateDir: stateDir,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { fw.Close() })
	return fw
}

// waitFor deposits a sentinel and waits until it was accepted: voicemail
// goes out in deposit order, so whatever was queued before has gone out
// too, and the accepted list is final.
func (fx *fixture) waitFor(tb testing.TB, mb *um.Mailbox) um.Message {
	tb.Helper()
	m := fx.deposit(tb, mb, "sentinel")
	eventually(tb, "sentinel "+m.ID.String()+" forwarded", func() bool {
		ids := fx.smtp.ids(tb)
		return len(ids) > 0 && ids[len(ids)-1] == m.ID.String()
	})
	return m
}

func wantIDs(tb testing.TB, got []string, want ...um.Message) {
	tb.Helper()
	var w []string
	for _, m := range want {
		w = append(w, m.ID.String())
	}
	if strings.Join(got, " ") != strings.Join(w, " ") {
		tb.Fatalf("forwarded IDs =\n%v\nwant\n%v", got, w)
	}
}

// TestForwardRestart: voicemail deposited but not sent before a restart,
// and deposited while no Forwarder ran, is forwarded by the next
// Forwarder, once; what was sent is not sent again. The state is kept in
// the store when it can (um.OutwardState), else in StateDir.
func TestForwardRestart(t *testing.T) {
	t.Run("state in the store", func(t *testing.T) { testForwardRestart(t, memstore.New()) })
	t.Run("state in files", func(t *testing.T) { testForwardRestart(t, plainStore{memstore.New()}) })
}

func testForwardRestart(t *testing.T, store um.Store) {
	dir := t.TempDir()
	fx := newFixtureOn(t, store, func(o *forward.Options) { o.StateDir = dir; o.MaxAttempts = 1 << 20 })
	ctx := context.Background()
	mb, _ := fx.svc.CreateMailbox(ctx, "1001")
	fx.deposit(t, mb, "history") // before forwarding began: never sent
	if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	m1 := fx.deposit(t, mb, "sent before the restart")
	eventually(t, "m1 forwarded", func() bool { return fx.fw.Status("1001").Sent == 1 })

	fx.smtp.refuse(true)
	m2 := fx.deposit(t, mb, "queued at the restart")
	eventually(t, "m2 refused", func() bool { s := fx.fw.Status("1001"); return s.Pending && s.LastError != nil })
	if err := fx.fw.Close(); err != nil {
		t.Fatal(err)
	}
	_, ferr := os.Stat(filepath.Join(dir, "1001.json"))
	if _, inStore := store.(um.OutwardState); inStore != errors.Is(ferr, os.ErrNotExist) {
		t.Fatalf("state file: %v; want one only when the store keeps no state", ferr)
	}

	// While no Forwarder runs: a deposit, and the sent m1 deleted and
	// undeleted (back in INBOX under a new UID).
	m3 := fx.deposit(t, mb, "deposited while stopped")
	if err := mb.Delete(ctx, m1.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Undelete(ctx, m1.ID); err != nil {
		t.Fatal(err)
	}

	fw2 := fx.newForwarder(t, dir)
	if err := fw2.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	fx.smtp.refuse(false)
	m4 := fx.waitFor(t, mb)
	wantIDs(t, fx.smtp.ids(t), m1, m2, m3, m4)
	// The server records a message before the client has its answer.
	eventually(t, "Status().Sent after the restart = 3", func() bool { return fw2.Status("1001").Sent == 3 })

	// Another restart with nothing pending sends nothing again.
	if err := fw2.Close(); err != nil {
		t.Fatal(err)
	}
	fw3 := fx.newForwarder(t, dir)
	if err := fw3.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	m5 := fx.waitFor(t, mb)
	wantIDs(t, fx.smtp.ids(t), m1, m2, m3, m4, m5)

	// Remove forgets the mailbox: forwarding it again starts afresh, and
	// what was deposited meanwhile is history.
	if err := fw3.Remove("1001"); err != nil {
		t.Fatal(err)
	}
	fx.deposit(t, mb, "deposited while not forwarded")
	if err := fw3.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	m6 := fx.waitFor(t, mb)
	wantIDs(t, fx.smtp.ids(t), m1, m2, m3, m4, m5, m6)
}

// TestForwardOverflow: deposits whose changes a subscription overflow
// dropped are still forwarded, each once, in order.
func TestForwardOverflow(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stateDir bool
	}{{"memory", false}, {"statedir", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Cleanup(forward.SetMaxQueue(2))
			dir := ""
			if tc.stateDir {
				dir = t.TempDir()
			}
			var mu sync.Mutex
			overflowed := false
			fx := newFixture(t, func(o *forward.Options) {
				o.StateDir, o.MaxAttempts = dir, 1<<20
				o.Logger = slog.New(errHandler(func(err error) {
					if errors.Is(err, um.ErrOverflow) {
						mu.Lock()
						overflowed = true
						mu.Unlock()
					}
				}))
			})
			ctx := context.Background()
			mb, _ := fx.svc.CreateMailbox(ctx, "1001")
			if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com", MarkHeard: true}); err != nil {
				t.Fatal(err)
			}
			fx.smtp.refuse(true)
			var want []um.Message
			want = append(want, fx.deposit(t, mb, "first"))
			// The forwarder is busy retrying the first while more come in
			// than its subscription holds.
			eventually(t, "first refused", func() bool { return fx.fw.Status("1001").LastError != nil })
			for range 8 {
				want = append(want, fx.deposit(t, mb, "burst"))
			}
			fx.smtp.refuse(false)
			want = append(want, fx.waitFor(t, mb))
			mu.Lock()
			if !overflowed {
				t.Errorf("the subscription did not overflow; the test proves nothing")
			}
			mu.Unlock()
			wantIDs(t, fx.smtp.ids(t), want...)
			eventually(t, "all marked heard", func() bool {
				st, err := mb.MWI(ctx)
				return err == nil && st.New == 0 && st.Old == len(want)
			})
		})
	}
}

// errHandler is a slog.Handler that passes every error attribute of every
// record to its func.
type errHandler func(error)

func (h errHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h errHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h errHandler) WithGroup(string) slog.Handler            { return h }
func (h errHandler) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok {
			h(err)
		}
		return true
	})
	return nil
}

// TestForwardNoAnswerToEndOfData: the server takes a message but its
// answer does not come within Options.Timeout. The message is in doubt:
// it is sent again, the same e-mail, and Status counts it in Resent.
func TestForwardNoAnswerToEndOfData(t *testing.T) {
	fx := newFixture(t, func(o *forward.Options) { o.Timeout = 300 * time.Millisecond })
	fx.smtp.OnData(func(n int) {
		if n == 1 {
			time.Sleep(time.Second) // past the client's Timeout
		}
	})
	ctx := context.Background()
	mb, _ := fx.svc.CreateMailbox(ctx, "1001")
	if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	m := fx.deposit(t, mb, "slow answer")
	eventually(t, "sent", func() bool { return fx.fw.Status("1001").Sent == 1 })
	wantIDs(t, fx.smtp.ids(t), m, m)
	got := fx.smtp.Messages()
	if !bytes.Equal(got[0].Data, got[1].Data) {
		t.Errorf("the copy sent again differs from the first")
	}
	if st := fx.fw.Status("1001"); st.Resent != 1 {
		t.Errorf("Status().Resent = %d, want 1", st.Resent)
	}
}
