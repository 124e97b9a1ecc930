package boltstore

import "os"

// syncDir makes the entries of dir (files created, renamed, removed in it)
// durable. It is a variable so that a test can record the order of the
// syncs.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
