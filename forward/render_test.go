package forward_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/forward"
	"github.com/embeddedum/um/storage/memstore"
)

// TestForwardUsesServiceRenderOptions: the Service's Options.Render (time
// zone, wording) reaches forwarded mail without forward.Options naming
// them, and forward.Options.Render's own fields win.
func TestForwardUsesServiceRenderOptions(t *testing.T) {
	german, err := um.NewTexts("de", "Sprachnachricht von {{.CallerNumber}}, {{.Length}}", "Sprachnachricht\n")
	if err != nil {
		t.Fatal(err)
	}
	smtp := startSMTP(t)
	svc, err := um.New(memstore.New(), &um.Options{Render: um.RenderOptions{
		Location: time.FixedZone("CET", 3600), Texts: german, Domain: "ignored.example",
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	fw, err := forward.New(svc, forward.Options{
		Addr: smtp.Addr, TLSConfig: &tls.Config{RootCAs: smtp.Roots},
		Username: "pbx", Password: "secret", From: "voicemail@pbx.example.com",
		Render: um.RenderOptions{Domain: "pbx.example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	ctx := context.Background()
	mb, err := svc.CreateMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav()), CallerNumber: "+4930123",
		Time: time.Date(2026, 12, 1, 8, 19, 33, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "forwarded", func() bool { return len(smtp.Messages()) == 1 })
	got := string(smtp.Messages()[0].Data)
	for _, want := range []string{
		"Date: Tue, 01 Dec 2026 09:19:33 +0100\r\n",
		"Subject: Sprachnachricht von +4930123, 0:02\r\n",
		"From: \"+4930123\" <+4930123@pbx.example.com>\r\n",
		"Content-Language: de\r\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("forwarded mail lacks %q:\n%s", want, got[:min(len(got), 1500)])
		}
	}
}
