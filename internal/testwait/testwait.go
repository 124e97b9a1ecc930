// Package testwait lets tests wait for what happens asynchronously.
package testwait

import (
	"testing"
	"time"
)

// Until polls cond every interval until it holds, and fails tb after
// timeout. It is for events that arrive asynchronously, not a timing
// assertion: the timeout only bounds how long a broken test hangs.
func Until(tb testing.TB, timeout, interval time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}
