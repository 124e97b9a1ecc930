package slogf_test

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/embeddedum/um/internal/slogf"
)

func TestLogfReceivesEveryLevelAsOneLine(t *testing.T) {
	var lines []string
	logf := func(format string, args ...any) { lines = append(lines, fmt.Sprintf(format, args...)) }
	log := slogf.Logger(nil, logf)
	log.Debug("client went away", "remote", "127.0.0.1:5000")
	log.Error("store failed", "mailbox", "1001")
	want := []string{
		`level=DEBUG msg="client went away" remote=127.0.0.1:5000`,
		`level=ERROR msg="store failed" mailbox=1001`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("Logf got:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestLoggerWinsOverLogf(t *testing.T) {
	given := slog.New(slog.DiscardHandler)
	called := false
	if got := slogf.Logger(given, func(string, ...any) { called = true }); got != given {
		t.Errorf("Logger(given, logf) = %p, want the given logger %p", got, given)
	}
	slogf.Logger(given, func(string, ...any) { called = true }).Error("x")
	if called {
		t.Error("Logf called although a Logger was given")
	}
	if got := slogf.Logger(nil, nil); got != slog.Default() {
		t.Errorf("Logger(nil, nil) = %p, want slog.Default()", got)
	}
}
