package boltstore

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data and the metadata needed to read it back (its
// size), but not its times: cheaper than fsync, and what bbolt uses too. It
// is a variable so that a test can record the order of the syncs.
var fdatasync = func(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// flushData is fdatasync for a flush that promises nothing (preflush),
// which tests need not record.
func flushData(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
