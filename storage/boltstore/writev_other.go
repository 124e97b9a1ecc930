//go:build !linux

package boltstore

import (
	"bytes"
	"os"
)

// writeAt writes bufs one after another at off in f.
func writeAt(f *os.File, bufs [][]byte, off int64) error {
	_, err := f.WriteAt(bytes.Join(bufs, nil), off)
	return err
}

// allocate is a no-op where the file system cannot allocate ahead.
func allocate(*os.File, int64, int64) error { return nil }

// startWriteback is a no-op where the kernel cannot begin writeback ahead
// of the sync.
func startWriteback(*os.File, int64, int64) {}
