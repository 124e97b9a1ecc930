package upstream

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"
)

// Security says how the connection to the mail server is encrypted. Both
// modes verify the server's certificate unless Config.TLSConfig says
// otherwise; there is no plaintext mode.
type Security int

const (
	// ImplicitTLS connects with TLS from the first byte (IMAPS, port 993).
	// It is the zero value and the default.
	ImplicitTLS Security = iota
	// StartTLS connects in plaintext and upgrades with STARTTLS before
	// anything else is sent (port 143). A server that does not offer
	// STARTTLS, or answers PREAUTH, is refused.
	StartTLS
)

// Config is the upstream account of one voice mailbox.
type Config struct {
	// Mailbox is the voice mailbox, e.g. "1001". Required.
	Mailbox string
	// Addr is the mail server's host:port. Required.
	Addr string
	// Security chooses implicit TLS (default) or STARTTLS.
	Security Security
	// TLSConfig, when set, is cloned for each connection: set RootCAs for a
	// private CA. ServerName defaults to Addr's host; MinVersion to TLS 1.2.
	TLSConfig *tls.Config
	// Username is the login name at the mail server. Required.
	Username string
	// Credentials authenticate Username: a Password or an OAuth2 token
	// source. Required.
	Credentials Credentials
	// Folder is the folder voicemail goes to, INBOX by default. It is
	// created when missing. It may hold the user's other mail: the engine
	// only ever touches messages that carry its X-Um-Message-Id header.
	Folder string
	// Trash is where messages deleted on the phone go. Empty means the
	// folder the server marks \Trash (SPECIAL-USE); when it has none,
	// deleted messages get \Deleted and a UID EXPUNGE of their UIDs alone.
	Trash string
	// NoTrash deletes with \Deleted and a UID EXPUNGE of the voicemail's
	// own UIDs even when the server has a Trash folder.
	NoTrash bool
}

func (c *Config) validate() error {
	switch {
	case c.Mailbox == "":
		return fmt.Errorf("upstream: config without Mailbox: %w", um.ErrInvalid)
	case c.Addr == "":
		return fmt.Errorf("upstream: config of %q without Addr: %w", c.Mailbox, um.ErrInvalid)
	case c.Username == "":
		return fmt.Errorf("upstream: config of %q without Username: %w", c.Mailbox, um.ErrInvalid)
	case c.Credentials == nil:
		return fmt.Errorf("upstream: config of %q without Credentials: %w", c.Mailbox, um.ErrInvalid)
	case c.Security != ImplicitTLS && c.Security != StartTLS:
		return fmt.Errorf("upstream: config of %q: unknown Security %d: %w", c.Mailbox, c.Security, um.ErrInvalid)
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("upstream: config of %q: Addr: %w: %w", c.Mailbox, um.ErrInvalid, err)
	}
	if c.Folder == "" {
		c.Folder = "INBOX"
	}
	return nil
}

func (c *Config) tlsConfig() *tls.Config {
	var tc *tls.Config
	if c.TLSConfig != nil {
		tc = c.TLSConfig.Clone()
	} else {
		tc = new(tls.Config)
	}
	if tc.ServerName == "" {
		tc.ServerName, _, _ = net.SplitHostPort(c.Addr)
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	return tc
}

// Credentials authenticate the engine at the mail server. The engine calls
// SASL once per connection, so a credential that changes (a refreshed
// OAuth2 token) is picked up at the next reconnect.
type Credentials interface {
	// SASL returns a SASL client for username, given the mechanisms the
	// server offers (the AUTH= capabilities, upper case). It must return
	// when ctx is done.
	SASL(ctx context.Context, username string, mechanisms []string) (sasl.Client, error)
}

// Password is a password sent with SASL PLAIN (or LOGIN when the server
// offers only that), always inside TLS.
type Password string

// SASL implements Credentials.
func (p Password) SASL(ctx context.Context, username string, mechs []string) (sasl.Client, error) {
	if !slices.Contains(mechs, "PLAIN") && slices.Contains(mechs, "LOGIN") {
		return sasl.NewLoginClient(username, string(p)), nil
	}
	return sasl.NewPlainClient("", username, string(p)), nil
}

// OAuth2 authenticates with an OAuth2 bearer token the host obtains and
// refreshes: OAUTHBEARER (RFC 7628) when the server offers it, otherwise
// XOAUTH2 (Microsoft 365, Google).
type OAuth2 struct {
	// Token returns a valid access token. It is called at each connect;
	// the host refreshes the token behind it.
	Token func(ctx context.Context) (string, error)
}

// SASL implements Credentials.
func (o OAuth2) SASL(ctx context.Context, username string, mechs []string) (sasl.Client, error) {
	if o.Token == nil {
		return nil, errors.New("upstream: OAuth2 without Token")
	}
	tok, err := o.Token(ctx)
	if err != nil {
		return nil, fmt.Errorf("upstream: oauth2 token: %w", err)
	}
	if slices.Contains(mechs, "OAUTHBEARER") || !slices.Contains(mechs, "XOAUTH2") {
		return sasl.NewOAuthBearerClient(&sasl.OAuthBearerOptions{Username: username, Token: tok}), nil
	}
	return &xoauth2Client{username: username, token: tok}, nil
}

// xoauth2Client is the XOAUTH2 mechanism, which go-sasl lacks.
type xoauth2Client struct{ username, token string }

// errAuthRefused is a login the server refused in a way that is not an
// IMAP NO: the XOAUTH2 error challenge.
var errAuthRefused = errors.New("upstream: login refused")

func (c *xoauth2Client) Start() (string, []byte, error) {
	return "XOAUTH2", []byte("user=" + c.username + "\x01auth=Bearer " + c.token + "\x01\x01"), nil
}

// Next gets the server's error challenge (a JSON status): the login has
// failed, and the decoded status is the error. (The empty answer the
// mechanism expects cannot be sent through go-imap, which encodes it as
// "=", and the session ends anyway.)
func (c *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	return nil, fmt.Errorf("%w: %s", errAuthRefused, xoauth2Reason(challenge))
}

// xoauth2Reason decodes the JSON of an XOAUTH2 error challenge, e.g.
// {"status":"401","schemes":"bearer","scope":"..."}, into a short text.
func xoauth2Reason(challenge []byte) string {
	var v struct {
		Status  string `json:"status"`
		Schemes string `json:"schemes"`
		Scope   string `json:"scope"`
		Error   string `json:"error"`
	}
	if len(challenge) > 4096 || json.Unmarshal(challenge, &v) != nil {
		return "undecodable XOAUTH2 error challenge"
	}
	var parts []string
	for _, kv := range [][2]string{{"status", v.Status}, {"error", v.Error}, {"schemes", v.Schemes}, {"scope", v.Scope}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+" "+strconv.Quote(kv[1]))
		}
	}
	if len(parts) == 0 {
		return "XOAUTH2 refused without a status"
	}
	return "XOAUTH2 " + strings.Join(parts, ", ")
}

func authMechanisms(caps imap.CapSet) []string {
	var out []string
	for c := range caps {
		if m, ok := strings.CutPrefix(strings.ToUpper(string(c)), "AUTH="); ok {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return out
}
