package interop

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/embeddedum/um"
)

// imaplibResult is what testdata/imaplib_client.py prints.
type imaplibResult struct {
	Capabilities []string `json:"capabilities"`
	Folders      []string `json:"folders"`
	Exists       int      `json:"exists"`
	Headers      []struct {
		UID    um.UID   `json:"uid"`
		Size   int64    `json:"size"`
		Flags  []string `json:"flags"`
		Header string   `json:"header"`
	} `json:"headers"`
	Body struct {
		UID um.UID `json:"uid"`
		Len int    `json:"len"`
		B64 string `json:"b64"`
	} `json:"body"`
	FlagsAfterPeek  []string `json:"flags_after_peek"`
	FlagsAfterStore []string `json:"flags_after_store"`
}

func TestPythonImaplib(t *testing.T) {
	python := program(t, "python3", "python3")
	for _, mode := range []string{"starttls", "tls"} {
		t.Run(mode, func(t *testing.T) {
			e := startEnv(t, 3)
			addr := e.PlainAddr
			if mode == "tls" {
				addr = e.TLSAddr
			}
			host, port, _ := net.SplitHostPort(addr)
			out := run(t, "", python, "testdata/imaplib_client.py", host, port, mode, e.CertFile, testUser, testPass)
			var res imaplibResult
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("imaplib_client.py output: %v\n%s", err, out)
			}

			if !slices.Contains(res.Folders, "INBOX") || !slices.Contains(res.Folders, "Trash") {
				t.Errorf("LIST = %q, want INBOX and Trash", res.Folders)
			}
			if res.Exists != len(e.msgs) {
				t.Errorf("SELECT INBOX EXISTS = %d, want %d", res.Exists, len(e.msgs))
			}
			if len(res.Headers) != len(e.msgs) {
				t.Fatalf("FETCH 1:* returned %d messages, want %d", len(res.Headers), len(e.msgs))
			}
			for i, h := range res.Headers {
				m := e.msgs[i]
				want := e.rendered(t, m)
				if h.UID != m.UID {
					t.Errorf("message %d: UID = %d, want %d", i, h.UID, m.UID)
				}
				if h.Size != int64(len(want)) {
					t.Errorf("UID %d: RFC822.SIZE = %d, want %d (the rendered length)", m.UID, h.Size, len(want))
				}
				head, _, _ := bytes.Cut(want, []byte("\r\n\r\n"))
				if h.Header != string(head)+"\r\n\r\n" {
					t.Errorf("UID %d: BODY[HEADER] =\n%q\nwant\n%q", m.UID, h.Header, string(head)+"\r\n\r\n")
				}
				for _, field := range []string{"Message-Context: voice-message", "X-CallingTelephoneNumber:", "Content-Duration:"} {
					if m.CallerNumber == "" && field == "X-CallingTelephoneNumber:" {
						continue
					}
					if !strings.Contains(h.Header, field) {
						t.Errorf("UID %d: header lacks %q:\n%s", m.UID, field, h.Header)
					}
				}
				if got, urgent := slices.Contains(h.Flags, `\Flagged`), m.Urgent; got != urgent {
					t.Errorf("UID %d: FLAGS %q, urgent = %v", m.UID, h.Flags, urgent)
				}
			}

			first := e.msgs[0]
			body, err := base64.StdEncoding.DecodeString(res.Body.B64)
			if err != nil {
				t.Fatal(err)
			}
			if want := e.rendered(t, first); !bytes.Equal(body, want) {
				t.Errorf("BODY.PEEK[] of UID %d: %d bytes differing from the %d rendered", first.UID, len(body), len(want))
			}
			if !bytes.Contains(body, []byte("Content-Type: audio/wav")) {
				t.Error("BODY[] has no audio/wav part")
			}
			if slices.Contains(res.FlagsAfterPeek, `\Seen`) {
				t.Errorf("FLAGS after BODY.PEEK[] = %q, want no \\Seen", res.FlagsAfterPeek)
			}
			if !slices.Contains(res.FlagsAfterStore, `\Seen`) {
				t.Errorf("FLAGS after STORE +FLAGS \\Seen = %q, want \\Seen", res.FlagsAfterStore)
			}

			// The phone side and the lamp see the message as heard.
			m, err := e.message(t, first)
			if err != nil {
				t.Fatal(err)
			}
			if !m.Heard() {
				t.Errorf("um: message UID %d Heard() = false after imaplib stored \\Seen", first.UID)
			}
			for _, other := range e.msgs[1:] {
				if m, err := e.message(t, other); err != nil || m.Heard() {
					t.Errorf("um: message UID %d = heard %v, %v; want unheard (only UID %d was marked)", other.UID, m.Heard(), err, first.UID)
				}
			}
			st := e.waitMWI(t, func(s um.MWIState) bool { return s.New == len(e.msgs)-1 })
			if st.Old != 1 || st.UrgentNew != 1 {
				t.Errorf("MWI = %v, want %d/1 (1/0)", st, len(e.msgs)-1)
			}
		})
	}
}
