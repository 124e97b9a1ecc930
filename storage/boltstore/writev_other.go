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
