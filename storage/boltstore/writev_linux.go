package boltstore

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// writeAt writes bufs one after another at off in f, with as few system
// calls as the kernel allows: the contents are written from where they
// were read, not copied into one buffer first.
func writeAt(f *os.File, bufs [][]byte, off int64) error {
	fd := int(f.Fd())
	for len(bufs) > 0 {
		batch := bufs[:min(len(bufs), 1024)] // IOV_MAX
		n, err := unix.Pwritev(fd, batch, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "pwritev", Path: f.Name(), Err: err}
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		off += int64(n)
		for n > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
				continue
			}
			bufs[0] = bufs[0][n:]
			n = 0
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
	}
	return nil
}

// allocate gives f the blocks of n bytes at off without changing its size,
// so that writing them later cannot fail for want of space.
func allocate(f *os.File, off, n int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, off, n)
		switch err {
		case nil:
			return nil
		case unix.EINTR:
			continue
		case unix.EOPNOTSUPP:
			return nil // the file system cannot say; the write will
		}
		return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
	}
}

// startWriteback asks the kernel to begin writing the whole pages of the n
// bytes at off to the disk, and returns without waiting. A batch of the log
// that is synced later (bgSync) is then on its way while the committer
// applies it and while the sync before it runs, so that sync waits for
// less; left to the fdatasync alone, the data of every batch waited in the
// page cache for the sync before it to end. The page the bytes end in is
// left out when partial: the next batch appends to it and would write it
// again. It promises nothing, so errors are left to the fdatasync.
func startWriteback(f *os.File, off, n int64) {
	end := (off + n) &^ (pageSize - 1)
	if end <= off {
		return
	}
	unix.SyncFileRange(int(f.Fd()), off, end-off, unix.SYNC_FILE_RANGE_WRITE)
}

// pageSize is the unit of the kernel's page cache.
var pageSize = int64(os.Getpagesize())
