package um

import (
	"errors"
	"fmt"
	"strings"
	"text/template"
	"time"
)

// Texts is the wording of a rendered voicemail in one language: templates
// for the Subject and for the text part. Make one with NewTexts; a Texts is
// immutable and safe for concurrent use. The default, when RenderOptions
// has none, is English (EnglishTexts).
type Texts struct {
	lang    string
	subject *template.Template
	body    *template.Template
}

// TextData is what the templates of a Texts are executed with.
type TextData struct {
	CallerName   string    // the caller's name, on one line; may be empty
	CallerNumber string    // the caller's number, on one line; may be empty
	Time         time.Time // when the call came, in RenderOptions.Location
	Length       string    // the recording's length as m:ss, or h:mm:ss from an hour
	Seconds      int64     // the length in whole seconds, as Content-Duration gives it
	Urgent       bool
	Transcript   string // the host's transcript, trimmed, lines ending in \n; may be empty
}

// The English wording, which EnglishTexts uses.
const (
	EnglishSubject = `Voice message from {{if .CallerName}}{{.CallerName}}{{if .CallerNumber}} ({{.CallerNumber}}){{end}}` +
		`{{else if .CallerNumber}}{{.CallerNumber}}{{else}}unknown caller{{end}}, {{.Length}}`
	EnglishBody = `Voice message from {{or .CallerName .CallerNumber "unknown caller"}}

{{if .CallerName}}Caller: {{.CallerName}}
{{end}}{{if .CallerNumber}}Number: {{.CallerNumber}}
{{end}}Time:   {{.Time.Format "Mon, 02 Jan 2006 15:04:05 -0700"}}
Length: {{.Length}}
{{if .Urgent}}Urgent: yes
{{end}}{{if .Transcript}}
Transcript:
{{.Transcript}}
{{end}}`
)

// EnglishTexts is the default wording.
var EnglishTexts = mustTexts("", EnglishSubject, EnglishBody)

func mustTexts(lang, subject, body string) *Texts {
	t, err := NewTexts(lang, subject, body)
	if err != nil {
		panic(err)
	}
	return t
}

// NewTexts parses a language's templates (text/template, executed with a
// TextData). language is the BCP 47 tag the text part's Content-Language
// header gives, such as "de"; empty sends no such header. The subject is
// made one line (runs of white space become one space) and encoded as RFC
// 2047 asks where it is not ASCII; the body's line ends become CRLF.
//
// NewTexts executes both templates on sample data, with every field set
// and with none, and fails when either fails or the subject comes out
// empty, so that rendering, which has no error to return, never meets a
// template that fails on a field.
func NewTexts(language, subject, body string) (*Texts, error) {
	if strings.ContainsFunc(language, func(r rune) bool {
		return !(r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z')
	}) {
		return nil, fmt.Errorf("%w: language %q is not a language tag", ErrInvalid, language)
	}
	t := &Texts{lang: language}
	var err error
	if t.subject, err = template.New("subject").Option("missingkey=error").Parse(subject); err != nil {
		return nil, fmt.Errorf("%w: subject template: %v", ErrInvalid, err)
	}
	if t.body, err = template.New("body").Option("missingkey=error").Parse(body); err != nil {
		return nil, fmt.Errorf("%w: body template: %v", ErrInvalid, err)
	}
	full := TextData{CallerName: "Alice", CallerNumber: "+4930123", Time: time.Unix(0, 0).UTC(),
		Length: "0:42", Seconds: 42, Urgent: true, Transcript: "Hello"}
	for _, d := range []TextData{full, {Time: time.Unix(0, 0).UTC(), Length: "0:00"}} {
		s, err := t.execSubject(d)
		if err == nil && s == "" {
			err = errors.New("empty subject")
		}
		if err != nil {
			return nil, fmt.Errorf("%w: subject template: %v", ErrInvalid, err)
		}
		if _, err := t.execBody(d); err != nil {
			return nil, fmt.Errorf("%w: body template: %v", ErrInvalid, err)
		}
	}
	return t, nil
}

// Language returns the language tag the Texts were made with.
func (t *Texts) Language() string { return t.lang }

func (t *Texts) execSubject(d TextData) (string, error) {
	var b strings.Builder
	if err := t.subject.Execute(&b, d); err != nil {
		return "", err
	}
	return oneLine(b.String()), nil
}

func (t *Texts) execBody(d TextData) (string, error) {
	var b strings.Builder
	if err := t.body.Execute(&b, d); err != nil {
		return "", err
	}
	s := strings.ReplaceAll(strings.ReplaceAll(b.String(), "\r\n", "\n"), "\r", "\n")
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s, nil
}

// texts renders the subject and body with t, falling back to English for
// a template that fails on data the checks of NewTexts did not meet.
func (t *Texts) texts(d TextData) (subject, body, lang string) {
	if t == nil {
		t = EnglishTexts
	}
	subject, err := t.execSubject(d)
	if err == nil && subject != "" {
		body, err = t.execBody(d)
	}
	if err != nil || subject == "" {
		if t == EnglishTexts {
			return "Voice message", "Voice message\n", ""
		}
		return EnglishTexts.texts(d)
	}
	return subject, body, t.lang
}

// encodeSubject encodes the words of s that are not ASCII as RFC 2047
// encoded words, adjacent ones together, leaving ASCII words readable.
func encodeSubject(s string) string {
	words := strings.Split(s, " ")
	var out []string
	for i := 0; i < len(words); {
		if isASCII(words[i]) {
			out = append(out, words[i])
			i++
			continue
		}
		j := i + 1
		for j < len(words) && !isASCII(words[j]) {
			j++
		}
		out = append(out, unstructured(strings.Join(words[i:j], " ")))
		i = j
	}
	return strings.Join(out, " ")
}

// RenderEmail renders m as RenderEmail does, with the options of this
// Service: the fields set in opts (the caller's: a mailbox, an address)
// win, Options.Render fills in the rest, and Options.TextsFor picks the
// wording for opts.Mailbox when neither gives one. The IMAP server, the
// sync engine and forwarding render through it, so one Options reaches
// them all.
func (s *Service) RenderEmail(m Message, opts RenderOptions) *Email {
	def := s.opts.Render
	if opts.Domain == "" {
		opts.Domain = def.Domain
	}
	if opts.To == "" {
		opts.To = def.To
	}
	if opts.Mailbox == "" {
		opts.Mailbox = def.Mailbox
	}
	if opts.Location == nil {
		opts.Location = def.Location
	}
	if opts.Texts == nil && s.opts.TextsFor != nil && opts.Mailbox != "" {
		opts.Texts = s.opts.TextsFor(opts.Mailbox)
	}
	if opts.Texts == nil {
		opts.Texts = def.Texts
	}
	return RenderEmail(m, opts)
}
