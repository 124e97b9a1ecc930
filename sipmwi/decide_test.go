package sipmwi

import (
	"errors"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestNotifyFailed(t *testing.T) {
	answer := func(code int, headers ...sip.Header) *sip.Response {
		r := sip.NewResponse(code, "")
		for _, h := range headers {
			r.AppendHeader(h)
		}
		return r
	}
	for _, tc := range []struct {
		name string
		res  *sip.Response
		err  error
		want bool
	}{
		{"200 OK", answer(200), nil, false},
		{"202 Accepted", answer(202), nil, false},
		{"no answer in time", nil, errors.New("timer F"), true},
		{"481: the phone forgot the dialog", answer(481), nil, true},
		{"404", answer(404), nil, true},
		{"503 with Retry-After: busy, not gone", answer(503, sip.NewHeader("Retry-After", "5")), nil, false},
		{"503 without Retry-After", answer(503), nil, true},
		{"401: a challenge, not a refusal", answer(401), nil, false},
		{"407: a proxy's challenge", answer(407), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := notifyFailed(tc.res, tc.err); got != tc.want {
				t.Errorf("notifyFailed() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAccepts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		accept []string
		want   bool
	}{
		{"no Accept: the package's default body", nil, true},
		{"the body type", []string{"application/simple-message-summary"}, true},
		{"in a list, with parameters, any case", []string{"text/plain, Application/Simple-Message-Summary;q=0.5"}, true},
		{"application/*", []string{"application/*"}, true},
		{"*/*", []string{"*/*"}, true},
		{"another type only", []string{"application/pidf+xml"}, false},
		{"over two headers", []string{"text/plain", "application/simple-message-summary"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := sip.NewRequest(sip.SUBSCRIBE, sip.Uri{Scheme: "sip", Host: "pbx"})
			for _, a := range tc.accept {
				req.AppendHeader(sip.NewHeader("Accept", a))
			}
			if got := accepts(req); got != tc.want {
				t.Errorf("accepts(%q) = %v, want %v", tc.accept, got, tc.want)
			}
		})
	}
}

func TestEventOf(t *testing.T) {
	for _, tc := range []struct{ name, header, value, want string }{
		{"plain", "Event", "message-summary", "message-summary"},
		{"with an id parameter", "Event", "message-summary;id=7", "message-summary"},
		{"any case", "Event", "Message-Summary", "message-summary"},
		{"compact form", "o", "message-summary", "message-summary"},
		{"another package", "Event", "presence", "presence"},
		{"none", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := sip.NewRequest(sip.SUBSCRIBE, sip.Uri{Scheme: "sip", Host: "pbx"})
			if tc.header != "" {
				req.AppendHeader(sip.NewHeader(tc.header, tc.value))
			}
			if got := eventOf(req); got != tc.want {
				t.Errorf("eventOf(%s: %s) = %q, want %q", tc.header, tc.value, got, tc.want)
			}
		})
	}
}
