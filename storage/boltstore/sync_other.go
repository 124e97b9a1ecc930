//go:build !linux

package boltstore

import "os"

// fdatasync is a variable so that a test can record the order of the syncs.
var fdatasync = func(f *os.File) error { return f.Sync() }

// flushData is fdatasync for a flush that promises nothing (preflush),
// which tests need not record.
func flushData(f *os.File) error { return f.Sync() }
