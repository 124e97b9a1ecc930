package dovecot_test

import (
	"slices"
	"testing"

	"github.com/embeddedum/um/internal/dovecot"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// TestProfiles: the server shapes announce what they stand for, and the
// Exchange one names its Trash "Deleted Items" without a \Trash mark.
func TestProfiles(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       dovecot.Options
		has, lacks []imap.Cap
		trash      string
		marked     bool
	}{
		{"as it comes", dovecot.Options{}, []imap.Cap{imap.CapCondStore, imap.CapMove, imap.CapUIDPlus, imap.CapSpecialUse}, nil, "Trash", true},
		{"exchange online", dovecot.ExchangeOnline(), []imap.Cap{imap.CapMove, imap.CapUIDPlus, imap.CapIdle},
			[]imap.Cap{imap.CapCondStore, imap.CapQResync, imap.CapSpecialUse}, "Deleted Items", false},
		{"old server", dovecot.OldServer(), []imap.Cap{imap.CapIdle, imap.CapSpecialUse}, []imap.Cap{imap.CapMove, imap.CapUIDPlus}, "Trash", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Dir, tc.opts.Users = t.TempDir(), map[string]string{"alice": "pw"}
			s := start(t, tc.opts)
			c, err := imapclient.DialTLS(s.TLSAddr, &imapclient.Options{TLSConfig: s.TLSConfig()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Login("alice", "pw").Wait(); err != nil {
				t.Fatal(err)
			}
			caps, err := c.Capability().Wait()
			if err != nil {
				t.Fatal(err)
			}
			for _, cp := range tc.has {
				if !caps.Has(cp) {
					t.Errorf("capabilities lack %s", cp)
				}
			}
			for _, cp := range tc.lacks {
				if caps.Has(cp) {
					t.Errorf("capabilities have %s", cp)
				}
			}
			list, err := c.List("", "*", nil).Collect()
			if err != nil {
				t.Fatal(err)
			}
			i := slices.IndexFunc(list, func(l *imap.ListData) bool { return l.Mailbox == tc.trash })
			if i < 0 {
				t.Fatalf("no folder %q in %+v", tc.trash, list)
			}
			if got := slices.Contains(list[i].Attrs, imap.MailboxAttrTrash); got != tc.marked {
				t.Errorf("%q marked \\Trash = %v, want %v", tc.trash, got, tc.marked)
			}
		})
	}
}
