// Package slogf bridges the printf-style Logf fields that Options structs
// carried before log/slog to a *slog.Logger, so hosts that still set Logf
// keep receiving every record.
package slogf

import (
	"io"
	"log/slog"
	"strings"
)

// Logger returns the logger an Options struct should use: logger when set;
// else, when logf is set, one that writes each record through logf as one
// line of text (level, message, attributes; no time, which a Logf host adds
// itself); else slog.Default().
func Logger(logger *slog.Logger, logf func(format string, args ...any)) *slog.Logger {
	if logger != nil {
		return logger
	}
	if logf == nil {
		return slog.Default()
	}
	h := slog.NewTextHandler(logfWriter(logf), &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	return slog.New(h)
}

// logfWriter hands each Write, which slog's TextHandler makes once per
// record, to logf as one line.
type logfWriter func(format string, args ...any)

var _ io.Writer = logfWriter(nil)

func (w logfWriter) Write(p []byte) (int, error) {
	w("%s", strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
