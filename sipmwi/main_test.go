package sipmwi_test

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// TestMain quiets sipgo's process-wide logger, which the tests' own phones
// use: its warnings about their sockets are noise in test output.
func TestMain(m *testing.M) {
	sip.SetDefaultLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}
