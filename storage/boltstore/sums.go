package boltstore

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Every content stored since checksums were introduced has its CRC-32C in
// the sums bucket, keyed like the blobs bucket, written by the transaction
// that records the first message naming the content and deleted with its
// last reference. CRC-32C rather than a cryptographic hash: it is there to
// find bit rot, truncation and stray writes, not an attacker (who could
// rewrite the database too), and the processor computes it at several
// gigabytes a second, which a deposit does not notice.
//
// The bucket is made at Open when missing rather than by a schema
// migration: a program from before it opens the database unchanged and
// simply leaves new contents without a sum, which Check counts as
// unverified, as it counts the contents stored before checksums existed.
var bucketSums = []byte("sums")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ensureSums makes the sums bucket when the database lacks it, and writes
// nothing otherwise.
func ensureSums(db *bolt.DB) error {
	var ok bool
	if err := db.View(func(tx *bolt.Tx) error {
		ok = tx.Bucket(bucketSums) != nil
		return nil
	}); err != nil || ok {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketSums)
		return err
	})
}

func putSum(tx *bolt.Tx, k blobKey, sum uint32) error {
	return tx.Bucket(bucketSums).Put(k[:], putU32(nil, sum))
}

func deleteSum(tx *bolt.Tx, k blobKey) error {
	if b := tx.Bucket(bucketSums); b != nil {
		return b.Delete(k[:])
	}
	return nil
}

// getSum returns the checksum of content k, and false for a content stored
// without one.
func getSum(tx *bolt.Tx, k blobKey) (uint32, bool, error) {
	b := tx.Bucket(bucketSums)
	if b == nil {
		return 0, false, nil
	}
	v := b.Get(k[:])
	switch len(v) {
	case 0:
		return 0, false, nil
	case 4:
		return binary.BigEndian.Uint32(v), true, nil
	}
	return 0, false, fmt.Errorf("%w: checksum of content %x is %d bytes", ErrCorrupt, k, len(v))
}

// deletePins keeps content files on disk while a backup or a check reads
// them. A purge that commits after a backup's snapshot would otherwise
// delete a file the snapshot still names, between the snapshot and the
// copy. While any pin is held, deleteBlobs (after Remove, Expunge,
// DeleteFolder, and for the sweep) sets the keys aside, and the last
// release deletes them. A crash while they wait leaves them to the sweep.
//
// A pin is taken before the snapshot's read transaction begins, so every
// deletion whose commit the snapshot does not see finds the pin held. A
// deletion that passed filter before the pin was taken belongs to a commit
// that happened before the snapshot, which therefore does not name the file.
type deletePins struct {
	mu   sync.Mutex
	n    int
	held []gone
}

func (p *deletePins) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
}

// release drops a pin and returns the keys to delete now.
func (p *deletePins) release() []gone {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n--
	if p.n > 0 {
		return nil
	}
	keys := p.held
	p.held = nil
	return keys
}

// filter returns the keys that may be deleted now and sets the others
// aside until the last pin is released.
func (p *deletePins) filter(keys []gone) []gone {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == 0 {
		return keys
	}
	p.held = append(p.held, keys...)
	return nil
}

// unpin releases a pin taken by pin and deletes the files it held back.
func (s *Store) unpin() { s.deleteBlobs(s.pins.release()) }
