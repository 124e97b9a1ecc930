package forward_test

import (
	"context"
	"strings"
	"testing"

	"log/slog"

	"github.com/embeddedum/um/forward"
	"github.com/embeddedum/um/internal/testwait"
)

// A submission the SMTP server refuses is logged at Warn, with the mailbox,
// the message's UID and the server's address, and never the password.
func TestRefusedSubmissionLogged(t *testing.T) {
	var out testwait.Buffer
	fx := newFixture(t, func(o *forward.Options) {
		o.Logger = slog.New(slog.NewTextHandler(&out, nil))
	})
	ctx := context.Background()
	mb, _ := fx.svc.CreateMailbox(ctx, "1001")
	if err := fx.fw.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	fx.smtp.refuse(true)
	fx.deposit(t, mb, "5551234")
	want := `level=WARN msg="forward: submission failed; retrying" mailbox=1001 uid=1 remote=` + fx.smtp.Addr
	eventually(t, "the refusal logged", func() bool { return strings.Contains(out.String(), want) })
	fx.smtp.refuse(false)
	if strings.Contains(out.String(), "secret") {
		t.Errorf("log holds the SMTP password:\n%s", out.String())
	}
}
