// The check below needs imapserver to answer um.ErrNotVoice with the words
// of um.InboxRefusal; until its error table does, this file builds only with
// "go test -tags inboxwording ./interop/", outside scripts/test.sh.

//go:build inboxwording

package interop

import (
	"strings"
	"testing"

	"github.com/embeddedum/um"
)

// TestInboxRefusalInPlainWords checks the text a mail client user reads when
// an e-mail is dropped on INBOX.
func TestInboxRefusalInPlainWords(t *testing.T) {
	e := startEnv(t, 1)
	c := dialIMAP(t, e)
	err := appendToInbox(c, []byte("Subject: lunch?\r\n\r\nat noon\r\n"))
	if err == nil || !strings.Contains(err.Error(), um.InboxRefusal) {
		t.Errorf("APPEND of an e-mail to INBOX = %v, want NO saying %q", err, um.InboxRefusal)
	}
}
