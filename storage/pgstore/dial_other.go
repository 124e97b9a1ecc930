//go:build !linux

package pgstore

import (
	"syscall"
	"time"
)

// userTimeout is nil where TCP_USER_TIMEOUT is not set: only the keepalive
// bounds this end's wait on a dead server.
func userTimeout(time.Duration) func(network, address string, c syscall.RawConn) error {
	return nil
}
