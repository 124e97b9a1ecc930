package imapserver

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestShutdownLetsCommandsFinish(t *testing.T) {
	e := newEnv(t, nil)
	if _, err := e.mailbox("1001").CreateFolder(context.Background(), "Saved"); err != nil {
		t.Fatal(err)
	}
	idler := dialRaw(t, e.tlsAddr, e.clientTLS)
	idler.cmd("a", "LOGIN alice alice-pw")
	idler.cmd("b", "SELECT INBOX")
	idler.send("c IDLE\r\n")
	if got := idler.line(); !strings.HasPrefix(got, "+") {
		t.Fatalf("IDLE = %q", got)
	}
	appender := dialRaw(t, e.tlsAddr, e.clientTLS)
	appender.cmd("a", "LOGIN alice alice-pw")
	msg := "Subject: half\r\n\r\n" + strings.Repeat("x", 1000) + "\r\n"
	appender.send("b APPEND Saved {" + itoa(len(msg)) + "}\r\n")
	if got := appender.line(); !strings.HasPrefix(got, "+") {
		t.Fatalf("APPEND = %q", got)
	}
	appender.send(msg[:500]) // the command is now in flight
	waitFor(t, "APPEND in flight", func() bool {
		e.srv.mu.Lock()
		defer e.srv.mu.Unlock()
		for c := range e.srv.conns {
			if c.busy.Load() > 0 {
				return true
			}
		}
		return false
	})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		done <- e.srv.Shutdown(ctx)
	}()
	if got := idler.line(); !strings.HasPrefix(got, "* BYE") {
		t.Fatalf("idler got %q, want * BYE", got)
	}
	appender.send(msg[500:] + "\r\n")
	lines := []string{appender.line(), appender.line()}
	if !strings.HasPrefix(lines[0], "b OK") || !strings.HasPrefix(lines[1], "* BYE") {
		t.Fatalf("appender got %q, want b OK then * BYE", lines)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}
	if n := len(e.list("1001", "Saved")); n != 1 {
		t.Fatalf("Saved holds %d after the in-flight APPEND, want 1", n)
	}
}

func itoa(n int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}
