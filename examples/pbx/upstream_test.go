package main

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um/internal/dovecot"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

func TestUpstreamFlag(t *testing.T) {
	tests := []struct {
		name, in           string
		addr, user, folder string
		starttls           bool
	}{
		{"imaps default port", "1001=imaps://alice:pw@mail.example.com", "mail.example.com:993", "alice", "", false},
		{"imap port folder", "1001=imap://bob%40example.com:p%40ss@127.0.0.1:1143/Voicemail", "127.0.0.1:1143", "bob@example.com", "Voicemail", true},
	}
	for _, tt := range tests {
		var f upstreamFlag
		if err := f.Set(tt.in); err != nil {
			t.Errorf("%s: Set(%q) = %v", tt.name, tt.in, err)
			continue
		}
		c := f[0]
		if c.Mailbox != "1001" || c.Addr != tt.addr || c.Username != tt.user || c.Folder != tt.folder || (c.Security != 0) != tt.starttls || c.Credentials == nil {
			t.Errorf("%s: Set(%q) = %+v", tt.name, tt.in, c)
		}
	}
	for _, in := range []string{"", "1001", "=imaps://a:b@h", "1001=http://a:b@h", "1001=imaps://h", "1001=imaps://a@h", "1001=imaps://a:b@"} {
		var f upstreamFlag
		if err := f.Set(in); err == nil {
			t.Errorf("Set(%q) = nil, want an error", in)
		}
	}
}

// TestUpstream runs the command with mailbox 1001 mirrored into an account
// on a real Dovecot: a deposit on the phone shows in that account, and
// reading it there turns the lamp off.
func TestUpstream(t *testing.T) {
	d, err := dovecot.Start(dovecot.Options{Dir: t.TempDir(), Users: map[string]string{"alice": "alicepw"}})
	if err != nil {
		t.Fatalf("start Dovecot (Debian package dovecot-imapd): %v", err)
	}
	t.Cleanup(d.Stop)
	bin := buildPBX(t)
	u := url.URL{Scheme: "imaps", User: url.UserPassword("alice", "alicepw"), Host: d.TLSAddr}
	p := startPBX(t, bin, t.TempDir(), "-user", "1001:secret1", "-upstream", "1001="+u.String(), "-upstream-ca", d.CertFile)

	// The worker connects in the background: sync fails until it has.
	// Lamp changes the worker brings down may come at any time; syncOK
	// returns those it read.
	syncOK := func() (mwi []string) {
		t.Helper()
		deadline := time.Now().Add(wait)
		for {
			p.send("sync 1001")
			got := p.next()
			for strings.HasPrefix(got, "MWI ") {
				mwi = append(mwi, got)
				got = p.next()
			}
			if got == "ok" {
				return mwi
			}
			if !strings.HasPrefix(got, "error: ") || time.Now().After(deadline) {
				t.Fatalf("sync 1001 = %q; stderr:\n%s\nDovecot:\n%s", got, p.stderr, d.Logs())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if mwi := syncOK(); len(mwi) > 0 {
		t.Fatalf("lamp changes before any deposit: %q", mwi)
	}
	p.send("deposit 1001 5551234 Alice")
	p.expect("MWI 1001 on 1/0 (0/0)", "ok 1")
	syncOK()

	c, err := imapclient.DialTLS(d.TLSAddr, &imapclient.Options{TLSConfig: d.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("alice", "alicepw").Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 1 {
		t.Fatalf("Dovecot INBOX = %+v, %v; want the one voicemail", sel, err)
	}
	store := &imap.StoreFlags{Op: imap.StoreFlagsAdd, Flags: []imap.Flag{imap.FlagSeen}, Silent: true}
	if err := c.Store(imap.SeqSetNum(1), store, nil).Close(); err != nil {
		t.Fatal(err)
	}
	// The worker sees the flag by IDLE, or at the latest when asked to sync.
	mwi := syncOK()
	if len(mwi) == 0 {
		mwi = []string{p.next()}
	}
	if want := "MWI 1001 off 0/1 (0/0)"; len(mwi) != 1 || mwi[0] != want {
		t.Fatalf("lamp changes after reading the copy = %q, want %q", mwi, want)
	}
	p.send("list 1001")
	p.expect("ok 1", "1 heard 5551234 3s Alice")

	p.stdin.Close()
	p.waitExit()
}
