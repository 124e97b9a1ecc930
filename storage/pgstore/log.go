package pgstore

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// logger returns the logger Options ask for: Logger, else one that hands
// each record to Logf as one line, else one that drops everything.
func (o *Options) logger() *slog.Logger {
	switch {
	case o.Logger != nil:
		return o.Logger
	case o.Logf != nil:
		return slog.New(logfHandler{logf: o.Logf})
	}
	return slog.New(slog.DiscardHandler)
}

// logfHandler formats records for a Logf function: the message, then the
// attributes as key=value.
type logfHandler struct {
	logf  func(format string, args ...any)
	attrs []slog.Attr
}

func (h logfHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h logfHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	h.logf("%s", b.String())
	return nil
}

func (h logfHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	return h
}

func (h logfHandler) WithGroup(string) slog.Handler { return h }
