package boltstore

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The layout of um.db (schema version 4). Integers are big-endian so that
// keys sort in numeric order.
//
//	meta                     bucket
//	  "schema"               uint32: the schema version
//	  "validity"             uint32: the last UIDVALIDITY handed out
//	blobs                    bucket: content key (16 bytes) -> uint32 reference count
//	sums                     bucket: content key -> uint32 CRC-32C of the content (sums.go;
//	                         made at Open, not by a migration: older programs ignore it)
//	contents                 bucket: content key -> the content, for those of at most
//	                         inlineMax bytes (the record's bit 4 says which kind)
//	seg                      bucket: content key -> log segment number, offset, size
//	                         (uint64 each): the larger contents deposited since schema 4
//	                         (wal.go); a larger content not in it is a content file
//	mailboxes                bucket: mailbox name -> mailbox bucket
//	  <mailbox>
//	    f                    bucket: folder name -> UIDVALIDITY uint32, UIDNEXT uint32
//	    i                    bucket: message ID (16 bytes) -> UIDVALIDITY uint32, UID uint32
//	    m                    bucket: UIDVALIDITY uint32 -> folder bucket
//	      <UIDVALIDITY>      bucket: UID uint32 -> message record (record.go)
//	    "n"                  uint64: the last ModSeq handed out in the mailbox
//	    h                    bucket: UIDVALIDITY uint32 -> HighestModSeq uint64
//	    v                    bucket: UIDVALIDITY uint32, ModSeq uint64, UID uint32 -> empty:
//	                         messages removed from the folder, for ModSeqer.Vanished
//	    s                    bucket: subscribed folder name -> empty
//	    "d"                  the delivery mode and the nodes that hold it (cluster.go);
//	                         absent when the mailbox has none
//	    o                    bucket: purpose -> outward state blob (lease.go); made on first use
//
// A folder's messages live under its UIDVALIDITY, not its name, so a rename
// touches one key whatever the folder holds.
var (
	bucketMeta      = []byte("meta")
	bucketBlobs     = []byte("blobs")
	bucketContents  = []byte("contents")
	bucketMailboxes = []byte("mailboxes")
	keySchema       = []byte("schema")
	keyValidity     = []byte("validity")
	subFolders      = []byte("f")
	subIDs          = []byte("i")
	subMsgs         = []byte("m")
	keyModSeq       = []byte("n")
	keyDelivery     = []byte("d")
	subOutward      = []byte("o")
	subHighest      = []byte("h")
	subVanished     = []byte("v")
	subSubs         = []byte("s")
)

// migrations bring a database from version i to i+1 (migrations[i]), all in
// one transaction with the version update. Append new ones; never edit one
// that has shipped.
var migrations = []func(tx *bolt.Tx) error{
	// 0 -> 1: the initial layout; UIDVALIDITY starts from the clock so that
	// a store created again in the same place does not repeat old values.
	func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketBlobs); err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketMailboxes); err != nil {
			return err
		}
		return meta.Put(keyValidity, putU32(nil, uint32(time.Now().Unix())))
	},
	// 1 -> 2: small contents live in the database. A program that knows
	// only version 1 would take their keys for missing files, so it must
	// refuse this database (ErrSchemaTooNew), which the version ensures.
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketContents)
		return err
	},
	// 2 -> 3: ModSeqs and subscriptions. Every message and folder starts
	// at ModSeq 1 (a record without one reads as 1, so no record is
	// rewritten), and INBOX and Trash are subscribed. A program that knows
	// only version 2 would rewrite records without their ModSeq, which
	// would then go down, so it must refuse this database.
	migrateModSeq,
	// 3 -> 4: the deposit log (wal.go). Contents of new deposits live in
	// log segments, which a program that knows only version 3 would take
	// for missing files, and it would not replay the log.
	func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketSeg)
		return err
	},
	// 4 -> 5: the log holds flag changes, moves, copies and removals too,
	// applied before their frames are synced (logged.go), which a program
	// that knows only version 4 would neither read back nor replay. Its
	// recovery stops at the first frame of a new kind, finds nothing to
	// replay and writes nothing, so it reaches this version and refuses.
	func(*bolt.Tx) error { return nil },
}

// SchemaVersion is the schema this package writes. Open migrates older
// databases to it and refuses newer ones with ErrSchemaTooNew.
var SchemaVersion = uint32(len(migrations))

func schemaVersion(tx *bolt.Tx) (uint32, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, nil
	}
	v := meta.Get(keySchema)
	if v == nil {
		return 0, nil
	}
	if len(v) != 4 {
		return 0, fmt.Errorf("%w: schema version is %d bytes", ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

// migrate checks the schema version and runs the migrations it lacks. It
// writes nothing to a database that is up to date.
func migrate(db *bolt.DB) error {
	var v uint32
	if err := db.View(func(tx *bolt.Tx) (err error) {
		v, err = schemaVersion(tx)
		return err
	}); err != nil {
		return err
	}
	switch {
	case v > SchemaVersion:
		return fmt.Errorf("%w: file has schema %d, this program knows up to %d", ErrSchemaTooNew, v, SchemaVersion)
	case v == SchemaVersion:
		return nil
	}
	return db.Update(func(tx *bolt.Tx) error {
		for i := v; i < SchemaVersion; i++ {
			if err := migrations[i](tx); err != nil {
				return fmt.Errorf("boltstore: migrate schema %d to %d: %w", i, i+1, err)
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, putU32(nil, SchemaVersion))
	})
}
