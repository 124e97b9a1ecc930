package imapserver

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestIdleHoldsOneGoroutine: a connection in IDLE waits on its own
// goroutine alone (no second one reading for it), and still gets every
// deposit and ends with DONE.
func TestIdleHoldsOneGoroutine(t *testing.T) {
	e := newEnv(t, nil)
	const n = 20
	clients := make([]*raw, n)
	for i := range clients {
		clients[i] = e.loggedIn("alice")
		clients[i].cmd("b", "SELECT INBOX")
	}
	before := runtime.NumGoroutine()
	for _, r := range clients {
		r.send("c IDLE\r\n")
		if l := r.line(); !strings.HasPrefix(l, "+ ") {
			t.Fatalf("IDLE = %q, want a continuation", l)
		}
	}
	// Goroutines of the test's own clients do not change: they are
	// blocked in reads before and after.
	if got := runtime.NumGoroutine(); got > before+2 {
		t.Errorf("%d connections entering IDLE added %d goroutines, want none", n, got-before)
	}
	e.deposit("1001", "+1", 10)
	for i, r := range clients {
		if l := r.line(); l != "* 1 EXISTS" {
			t.Errorf("client %d in IDLE read %q, want * 1 EXISTS", i, l)
		}
		r.send("DONE\r\n")
		if got := r.until("c"); !strings.HasPrefix(got[len(got)-1], "c OK") {
			t.Errorf("client %d: DONE answered %q", i, got)
		}
	}
}

// TestIdleWakesDoNotBreakCommands: deposits land while a client enters
// and leaves IDLE and runs commands in between, so that wakes meant for
// an IDLE arrive after it ended; every command still succeeds and every
// deposit is announced.
func TestIdleWakesDoNotBreakCommands(t *testing.T) {
	e := newEnv(t, nil)
	r := e.loggedIn("alice")
	r.cmd("b", "SELECT INBOX")
	exists := 0
	read := func(l string) string {
		var n int
		if _, err := fmt.Sscanf(l, "* %d EXISTS", &n); err == nil {
			exists = max(exists, n)
		}
		return l
	}
	upTo := func(tag string) string {
		for {
			if l := read(r.line()); strings.HasPrefix(l, tag) {
				return l
			}
		}
	}
	stop := make(chan struct{})
	done := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				done <- n
				return
			default:
			}
			e.deposit("1001", "+1", 10)
			n++
			time.Sleep(time.Millisecond)
		}
	}()
	for round := range 100 {
		r.send("c IDLE\r\n")
		upTo("+ ")
		r.send("DONE\r\n")
		if got := upTo("c "); !strings.HasPrefix(got, "c OK") {
			t.Fatalf("round %d: IDLE ended with %q", round, got)
		}
		r.send("n NOOP\r\n")
		if got := upTo("n "); !strings.HasPrefix(got, "n OK") {
			t.Fatalf("round %d: NOOP = %q", round, got)
		}
	}
	close(stop)
	deposited := <-done
	r.send("n NOOP\r\n")
	upTo("n ")
	if exists != deposited {
		t.Errorf("highest EXISTS announced = %d, want %d deposits", exists, deposited)
	}
}
