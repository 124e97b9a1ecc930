package imapserver

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStatsCountCommands: Stats counts commands by name and result.
func TestStatsCountCommands(t *testing.T) {
	e := newEnv(t, nil)
	r := e.loggedIn("alice")
	r.cmd("b", "SELECT INBOX")
	r.cmd("c", "UID FETCH 1:* (FLAGS)")
	r.cmd("d", "SELECT Nothing")
	r.cmd("e", "FROB")
	st := e.srv.Stats()
	for k, want := range map[CommandResult]uint64{
		{"LOGIN", "OK"}: 1, {"SELECT", "OK"}: 1, {"UID FETCH", "OK"}: 1, {"SELECT", "NO"}: 1, {"OTHER", "BAD"}: 1,
	} {
		if got := st.Commands[k]; got != want {
			t.Errorf("Stats().Commands[%v] = %d, want %d (all: %v)", k, got, want, st.Commands)
		}
	}
}

// recordLog is a slog handler that keeps the records at or above a level.
type recordLog struct {
	mu   sync.Mutex
	min  slog.Level
	msgs []string
}

func (l *recordLog) Enabled(_ context.Context, lv slog.Level) bool { return lv >= l.min }
func (l *recordLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var sb strings.Builder
	sb.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { sb.WriteString(" " + a.String()); return true })
	l.msgs = append(l.msgs, sb.String())
	return nil
}
func (l *recordLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *recordLog) WithGroup(string) slog.Handler      { return l }

func (l *recordLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// TestClientFaultsLogNothingAboveDebug: resets, a plain first record on the
// TLS port, garbage, and a clean Shutdown while a client idles log nothing
// at Info or above.
func TestClientFaultsLogNothingAboveDebug(t *testing.T) {
	rl := &recordLog{min: slog.LevelInfo}
	e := newEnv(t, func(o *Options) { o.Logger = slog.New(rl) })
	// A plain-text client on the implicit TLS port.
	p := dialRawNoGreeting(t, e.tlsAddr)
	p.send("a LOGIN alice alice-pw\r\n")
	p.closed()
	// A client that resets mid-command.
	r := e.loggedIn("alice")
	r.send("b FETCH 1:* (BODY[")
	r.c.Close()
	// An idling client during a clean stop.
	idler := e.loggedIn("alice")
	idler.cmd("c", "SELECT INBOX")
	idler.send("d IDLE\r\n")
	idler.line()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if got := idler.line(); !strings.HasPrefix(got, "* BYE") {
		t.Fatalf("idler got %q, want * BYE", got)
	}
	if msgs := rl.all(); len(msgs) > 0 {
		t.Fatalf("client faults and a clean stop logged %q, want nothing above Debug", msgs)
	}
}
