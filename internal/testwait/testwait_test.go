package testwait_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um/internal/testwait"
)

// recorder is a testing.TB that records Fatalf instead of stopping the
// test; Until then polls on, so a condition that ends on a recorded
// failure lets it return.
type recorder struct {
	testing.TB
	msg string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Fatalf(format string, args ...any) { r.msg = fmt.Sprintf(format, args...) }

func TestUntilHolds(t *testing.T) {
	var n atomic.Int32
	r := &recorder{TB: t}
	testwait.Until(r, 10*time.Second, time.Millisecond, "the third poll", func() bool { return n.Add(1) == 3 })
	if r.msg != "" || n.Load() != 3 {
		t.Errorf("Until: failure %q after %d polls, want none after 3", r.msg, n.Load())
	}
}

func TestUntilTimesOut(t *testing.T) {
	r := &recorder{TB: t}
	testwait.Until(r, 20*time.Millisecond, time.Millisecond, "never", func() bool { return r.msg != "" })
	if !strings.Contains(r.msg, "never") {
		t.Errorf("Until on a condition that never holds: failure %q, want one naming it", r.msg)
	}
}

func TestUntilShowTimesOut(t *testing.T) {
	r := &recorder{TB: t}
	testwait.UntilShow(r, 20*time.Millisecond, time.Millisecond, "never", func() bool { return r.msg != "" },
		func() string { return "the state seen" })
	if !strings.Contains(r.msg, "never") || !strings.Contains(r.msg, "the state seen") {
		t.Errorf("UntilShow on a condition that never holds: failure %q, want one naming it and what show reported", r.msg)
	}
}
