package main

import (
	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/boltstore"
)

// openStore opens the store the PBX keeps its mailboxes in: the embedded
// default, one directory that survives restarts.
func openStore(dir string, logf func(string, ...any)) (um.Store, error) {
	return boltstore.Open(dir, &boltstore.Options{Logf: logf})
}
