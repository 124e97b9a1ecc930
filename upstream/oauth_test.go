package upstream_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/embeddedum/um/internal/dovecot"
	"github.com/embeddedum/um/upstream"
)

// introspector is an OAuth2 token introspection endpoint (RFC 7662) that
// accepts the tokens it was told about.
type introspector struct {
	mu     sync.Mutex
	valid  map[string]string // token -> user
	asked  []string          // tokens Dovecot asked about
	server *httptest.Server
}

func startIntrospector(tb testing.TB) *introspector {
	in := &introspector{valid: make(map[string]string)}
	in.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		tok := r.PostForm.Get("token")
		in.mu.Lock()
		in.asked = append(in.asked, tok)
		user, ok := in.valid[tok]
		in.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"active": ok, "username": user})
	}))
	tb.Cleanup(in.server.Close)
	return in
}

func (in *introspector) allow(tok, user string) {
	in.mu.Lock()
	in.valid[tok] = user
	in.mu.Unlock()
}

func (in *introspector) wasAsked(tok string) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, a := range in.asked {
		if a == tok {
			return true
		}
	}
	return false
}

// TestOAuth2Introspection checks bearer tokens the way a provider does,
// through Dovecot's oauth2 passdb and an introspection endpoint: the token
// source is asked again at every connection (a refreshed token is used at
// once), and a refused XOAUTH2 login reports the server's decoded reason.
func TestOAuth2Introspection(t *testing.T) {
	in := startIntrospector(t)
	opts := dovecot.ExchangeOnline() // XOAUTH2 only, as Microsoft 365 offers
	opts.Dir, opts.Users = t.TempDir(), map[string]string{"1001": "pass1001"}
	opts.OAuth2IntrospectionURL = in.server.URL
	d, err := dovecot.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	e := newEnv(t, d)
	ctx := context.Background()
	var calls atomic.Int32
	var revoked atomic.Bool
	cfg := upstream.Config{
		Mailbox: "1001", Addr: d.TLSAddr, TLSConfig: d.TLSConfig(), Username: "1001", Trash: "Deleted Items",
		Credentials: upstream.OAuth2{Token: func(context.Context) (string, error) {
			n := calls.Add(1)
			tok := fmt.Sprintf("token-%d", n)
			if !revoked.Load() {
				in.allow(tok, "1001")
			}
			return tok, nil
		}},
	}
	mb, _ := e.svc.EnsureMailbox(ctx, "1001")
	if err := e.eng.Add(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	e.waitSynced("1001")
	m := deposit(t, mb, "x")
	mc := newMailClient(t, d, "1001")
	eventually(t, "deposit upstream", func() bool { return len(mc.find("INBOX", m.ID)) == 1 })
	if !in.wasAsked("token-1") {
		t.Fatalf("Dovecot never asked the introspection endpoint about token-1")
	}

	// A reconnect asks the token source again and logs in with the new
	// token.
	d.Kill()
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	e.waitSynced("1001")
	if n := calls.Load(); n < 2 {
		t.Fatalf("token source called %d times over two connections, want 2 or more", n)
	}
	if !in.wasAsked(fmt.Sprintf("token-%d", calls.Load())) {
		t.Fatalf("the refreshed token was not the one used")
	}

	// A revoked token: the error says what the server said, not a
	// protocol complaint.
	revoked.Store(true)
	d.Kill()
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "refused login reported", func() bool {
		err := e.eng.Status("1001").LastError
		return err != nil && strings.Contains(err.Error(), "XOAUTH2 status")
	})
	err = e.eng.Status("1001").LastError
	if strings.Contains(err.Error(), "base64") || strings.Contains(err.Error(), "token-") {
		t.Fatalf("Status().LastError = %v, want the decoded reason and no token", err)
	}
	t.Logf("refused: %v", err)
}
