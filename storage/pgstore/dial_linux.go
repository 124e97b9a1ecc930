package pgstore

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// userTimeout returns a dialer's Control that sets TCP_USER_TIMEOUT to d
// on TCP sockets: data the server does not acknowledge within d ends the
// connection, where the kernel would otherwise retransmit for many minutes.
func userTimeout(d time.Duration) func(network, address string, c syscall.RawConn) error {
	ms := int((d + time.Millisecond - 1) / time.Millisecond)
	return func(network, _ string, c syscall.RawConn) error {
		if network != "tcp" && network != "tcp4" && network != "tcp6" {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
		}); err != nil {
			return err
		}
		return serr
	}
}
