package main

import (
	"context"
	"fmt"
	"os"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/boltstore"
	"github.com/embeddedum/um/storage/pgstore"
)

// openStore opens the store the PBX keeps its mailboxes in: the embedded
// default, one directory that survives restarts, or with -pg a PostgreSQL
// database that several PBX nodes share.
func openStore(ctx context.Context, cfg *config, dir string, logf func(string, ...any)) (um.Store, error) {
	if cfg.pg == "" {
		return boltstore.Open(dir, &boltstore.Options{Logf: logf})
	}
	return pgstore.Open(ctx, cfg.pg, &pgstore.Options{Node: cfg.node, Logf: logf})
}

// defaultNode names this process in a cluster when -node is not given:
// nodes that share a database must have different names.
func defaultNode() string {
	host, err := os.Hostname()
	if err != nil {
		host = "pbx"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}
