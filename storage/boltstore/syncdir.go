package boltstore

import "os"

// syncDir makes the entries of dir (files created, renamed, removed in it)
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
