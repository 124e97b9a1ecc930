package main

import (
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// TestListFollowsMailClients checks what the phone's list says about what a
// mail client did: its star is the urgency, an e-mail it filed in a user
// folder is marked as e-mail, and the caller's name closes the line.
func TestListFollowsMailClients(t *testing.T) {
	bin := buildPBX(t)
	dir := t.TempDir()
	p := startPBX(t, bin, dir, "-user", "1001:secret1")
	p.send("deposit 1001 5551234 Alice Smith")
	p.expect("MWI 1001 on 1/0 (0/0)", "ok 1")
	p.send("urgent 1001 +4930123456")
	p.expect("MWI 1001 on 2/0 (1/0)", "ok 2")

	c, err := imapclient.DialStartTLS(p.imap, &imapclient.Options{TLSConfig: tlsConfig(t, dir)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("1001", "secret1").Wait(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	star := func(uid imap.UID, op imap.StoreFlagsOp) {
		t.Helper()
		st := &imap.StoreFlags{Op: op, Silent: true, Flags: []imap.Flag{imap.FlagFlagged}}
		if err := c.Store(imap.UIDSetNum(uid), st, nil).Close(); err != nil {
			t.Fatalf("UID STORE %v \\Flagged: %v", op, err)
		}
	}
	star(1, imap.StoreFlagsAdd)
	p.expect("MWI 1001 on 2/0 (2/0)")
	star(2, imap.StoreFlagsDel)
	p.expect("MWI 1001 on 2/0 (1/0)")
	p.send("list 1001")
	p.expect("ok 2", "1 new urgent 5551234 3s Alice Smith", "2 new +4930123456 3s")

	if err := c.Create("Drafts", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	draft := "From: 1001@pbx\r\nSubject: call Alice back\r\n\r\nabout the invoice\r\n"
	cmd := c.Append("Drafts", int64(len(draft)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagDraft}})
	if _, err := strings.NewReader(draft).WriteTo(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatalf("APPEND to Drafts: %v", err)
	}
	p.send("list 1001 Drafts")
	p.expect("ok 1", "1 e-mail")
	c.Logout().Wait()
}
