package main

import (
	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
)

// openStore opens the store the PBX keeps its mailboxes in.
func openStore(dir string) (um.Store, error) {
	return memstore.New(), nil
}
