package um_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

var germanTexts = mustTexts("de",
	`Sprachnachricht von {{or .CallerName .CallerNumber "unbekannt"}}, {{.Length}}`,
	`Sprachnachricht von {{or .CallerName .CallerNumber "unbekannt"}}
{{if .CallerNumber}}Nummer: {{.CallerNumber}}
{{end}}Zeit:   {{.Time.Format "02.01.2006 15:04"}}
Länge:  {{.Length}}
{{if .Urgent}}Dringend
{{end}}{{with .Transcript}}
Abschrift:
{{.}}
{{end}}`)

func mustTexts(lang, subject, body string) *um.Texts {
	t, err := um.NewTexts(lang, subject, body)
	if err != nil {
		panic(err)
	}
	return t
}

func TestNewTextsRefuses(t *testing.T) {
	tests := []struct{ name, lang, subject, body string }{
		{"unparsable subject", "", "{{.CallerName", "x"},
		{"unknown field", "", "{{.Nope}}", "x"},
		{"unknown field in the body", "", "x", "{{.Time.Nope}}"},
		{"empty subject", "", "{{if .Urgent}}urgent{{end}}", "x"},
		{"language with a space", "de DE", "x", "x"},
	}
	for _, tt := range tests {
		if _, err := um.NewTexts(tt.lang, tt.subject, tt.body); !errors.Is(err, um.ErrInvalid) {
			t.Errorf("%s: NewTexts() = %v, want ErrInvalid", tt.name, err)
		}
	}
}

// TestEnglishTextsAreTheDefault: RenderOptions without Texts and with
// EnglishTexts give the same bytes.
func TestEnglishTextsAreTheDefault(t *testing.T) {
	for _, tc := range goldenCases() {
		o := tc.opts
		if o.Texts != nil {
			continue
		}
		o.Texts = um.EnglishTexts
		audio := testAudio(int(tc.m.Size))
		if a, b := render(t, um.RenderEmail(tc.m, tc.opts), audio), render(t, um.RenderEmail(tc.m, o), audio); !bytes.Equal(a, b) {
			t.Errorf("%s: EnglishTexts renders otherwise than the default:\n%s\n---\n%s", tc.name, a, b)
		}
	}
}

// TestAttachmentNamesDiffer: ten voicemails from one caller in one second
// get ten attachment names.
func TestAttachmentNamesDiffer(t *testing.T) {
	seen := make(map[string]bool)
	for range 10 {
		m := testMessage(100)
		m.ID = uuid.New()
		part := um.RenderEmail(m, um.RenderOptions{}).Structure().Children[1]
		name := part.DispositionParams["filename"]
		if seen[name] || part.Params["name"] != name {
			t.Fatalf("attachment name %q (type name %q) repeats or differs from the type's", name, part.Params["name"])
		}
		seen[name] = true
	}
}

// TestServiceRenderOptions: Service.RenderEmail applies Options.Render
// and Options.TextsFor, and what its caller sets wins.
func TestServiceRenderOptions(t *testing.T) {
	french := mustTexts("fr", `Message vocal de {{or .CallerName .CallerNumber "inconnu"}}, {{.Length}}`, "Message vocal\n")
	f := newFixture(t, um.Options{
		Render: um.RenderOptions{Domain: "pbx.example.com", Location: time.FixedZone("CET", 3600), Texts: germanTexts},
		TextsFor: func(mailbox string) *um.Texts {
			if mailbox == "1002" {
				return french
			}
			return nil
		},
	})
	m := testMessage(10)
	tests := []struct {
		name string
		opts um.RenderOptions
		want []string
	}{
		{"service defaults", um.RenderOptions{Mailbox: "1001"},
			[]string{"Date: Tue, 02 Jan 2024 16:04:05 +0100", "Subject: Sprachnachricht von Alice Example, 0:42", "To: <1001@pbx.example.com>", "Content-Language: de"}},
		{"the mailbox's language", um.RenderOptions{Mailbox: "1002"},
			[]string{"Subject: Message vocal de Alice Example, 0:42", "Content-Language: fr"}},
		{"the caller's fields win", um.RenderOptions{Mailbox: "1002", Domain: "other.example", Location: time.UTC, Texts: um.EnglishTexts},
			[]string{"Date: Tue, 02 Jan 2024 15:04:05 +0000", "Subject: Voice message from Alice Example (+4930123), 0:42", "To: <1002@other.example>"}},
	}
	for _, tt := range tests {
		got := string(render(t, f.svc.RenderEmail(m, tt.opts), testAudio(10)))
		for _, w := range tt.want {
			if !strings.Contains(got, w+"\r\n") {
				t.Errorf("%s: rendered message lacks %q:\n%s", tt.name, w, got)
			}
		}
	}
}
