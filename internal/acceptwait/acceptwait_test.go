package acceptwait

import (
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestBackoff: shortages of descriptors and kernel memory, as accept
// reports them, are waited out, 5 ms doubling to a second, and a success
// starts over; a closed listener or another failure ends the loop.
func TestBackoff(t *testing.T) {
	accept := func(errno syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
	}
	var b Backoff
	want := []time.Duration{5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000}
	for i, w := range want {
		if d, ok := b.Next(accept(syscall.EMFILE)); !ok || d != w*time.Millisecond {
			t.Fatalf("failure %d in a row: Next = %v, %v; want %v, true", i+1, d, ok, w*time.Millisecond)
		}
	}
	b.Reset()
	for _, errno := range []syscall.Errno{syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if d, ok := b.Next(accept(errno)); !ok || d != 5*time.Millisecond {
			t.Errorf("after Reset, %v: Next = %v, %v; want 5ms, true", errno, d, ok)
		}
		b.Reset()
	}
	for _, err := range []error{net.ErrClosed, accept(syscall.EINVAL)} {
		if _, ok := b.Next(err); ok {
			t.Errorf("Next(%v) waits, want it to end the loop", err)
		}
	}
}
