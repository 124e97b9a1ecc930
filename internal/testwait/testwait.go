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
	UntilShow(tb, timeout, interval, what, cond, nil)
}

// UntilShow is Until that, when it fails, adds what show reports (the
// state cond was judged on, for a failure that explains itself). A nil
// show adds nothing.
func UntilShow(tb testing.TB, timeout, interval time.Duration, what string, cond func() bool, show func() string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			seen := ""
			if show != nil {
				seen = "; " + show()
			}
			tb.Fatalf("timed out after %v waiting for %s%s", timeout, what, seen)
		}
		time.Sleep(interval)
	}
}
