package interop

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"testing"

	"github.com/embeddedum/um"
)

func TestCurl(t *testing.T) {
	curl := program(t, "curl", "curl")
	for _, tc := range []struct {
		name   string
		scheme string
		tls    bool
		flags  []string
	}{
		{"starttls", "imap", false, []string{"--ssl-reqd"}},
		{"tls", "imaps", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startEnv(t, 3)
			addr := e.PlainAddr
			if tc.tls {
				addr = e.TLSAddr
			}
			base := fmt.Sprintf("%s://%s/", tc.scheme, addr)
			args := append([]string{"-sS", "--max-time", "20", "--cacert", e.CertFile, "-u", testUser + ":" + testPass}, tc.flags...)

			list := run(t, "", curl, append(args, base)...)
			var folders []string
			for _, m := range regexp.MustCompile(`(?m)^\* LIST \([^)]*\) "[^"]*" "?([^"\r\n]+)"?\r?$`).FindAllSubmatch(list, -1) {
				folders = append(folders, string(m[1]))
			}
			if !slices.Contains(folders, "INBOX") || !slices.Contains(folders, "Trash") {
				t.Errorf("curl %s: folders %q, want INBOX and Trash; output:\n%s", base, folders, list)
			}

			// The urgent one, which is not the first: curl must address it
			// by UID.
			m := e.msgs[1]
			got := run(t, "", curl, append(args, fmt.Sprintf("%sINBOX;UID=%d", base, m.UID))...)
			want := e.rendered(t, m)
			if !bytes.Equal(got, want) {
				t.Errorf("curl INBOX;UID=%d: %d bytes differing from the %d rendered", m.UID, len(got), len(want))
			}
			for _, s := range []string{
				"Message-Context: voice-message\r\n",
				"X-CallingTelephoneNumber: " + m.CallerNumber + "\r\n",
				"Importance: high\r\n",
				"Content-Type: audio/wav",
				"Content-Disposition: attachment",
			} {
				if !bytes.Contains(got, []byte(s)) {
					t.Errorf("curl INBOX;UID=%d: output lacks %q", m.UID, s)
				}
			}

			// curl fetches BODY[], not BODY.PEEK[]: as when the message is
			// played, it is heard now.
			now, err := e.message(t, m)
			if err != nil {
				t.Fatal(err)
			}
			if !now.Heard() {
				t.Errorf("um: UID %d Heard() = false after curl fetched BODY[]", m.UID)
			}
			e.waitMWI(t, func(s um.MWIState) bool { return s.New == 2 && s.Old == 1 && s.UrgentOld == 1 })
		})
	}
}
