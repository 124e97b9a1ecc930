package pgstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/embeddedum/um/internal/testwait"
	"github.com/embeddedum/um/storage/pgstore"
)

// TestLogger checks that schema migrations are logged at Info with the
// versions, through Options.Logger, and through the superseded Logf when
// Logger is nil.
func TestLogger(t *testing.T) {
	var buf testwait.Buffer
	openStore(t, newDatabase(t), &pgstore.Options{Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	if got := buf.String(); !strings.Contains(got, "level=INFO") || !strings.Contains(got, fmt.Sprintf("to=%d", pgstore.SchemaVersion)) {
		t.Errorf("Logger got %q, want an Info record of the migration to version %d", got, pgstore.SchemaVersion)
	}
	var mu sync.Mutex
	var lines []string
	s, err := pgstore.Open(context.Background(), newDatabase(t), &pgstore.Options{Logf: func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, fmt.Sprintf(format, args...))
	}})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != pgstore.SchemaVersion || !strings.Contains(lines[0], "pgstore: migrating schema") || !strings.Contains(lines[0], "from=0 to=1") {
		t.Errorf("Logf got %q, want one line per migration", lines)
	}
}
