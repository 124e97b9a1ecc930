package boltstore

import (
	"os"

	"golang.org/x/sys/unix"
)

// punch frees the disk blocks of a content no message names any more in
// its log segment; the segment keeps its size, and reads of the range
// would return zeros.
func (s *Store) punch(l segLoc) error {
	f, err := os.OpenFile(s.segPath(l.seq), os.O_WRONLY, 0)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, l.off, l.size)
	if err == unix.EOPNOTSUPP {
		return nil // the segment's deletion frees it
	}
	return err
}
