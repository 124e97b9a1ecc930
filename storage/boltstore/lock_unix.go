//go:build unix

package boltstore

import (
	"os"
	"syscall"
	"time"
)

// lockFile takes an exclusive flock on f, as bbolt does on the same file,
// waiting up to timeout. It reports false when another process holds it.
func lockFile(f *os.File, timeout time.Duration) (bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return true, nil
		}
		if err != syscall.EWOULDBLOCK {
			return false, err
		}
		if time.Now().After(deadline) {
			return false, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}
