// Package pieces keeps the fixed-size buffers that large bodies are read
// into: an IMAP client's APPEND literal (imapserver), a deposit's content
// (storage/boltstore). A buffer of the body's size made every such body
// allocate and clear that much, and the collector's work on those took
// processor time from the server; a pool of buffers of any size kept
// voicemail-sized ones alive for small bodies too. Pieces of one size cost
// no allocation once the pool has warmed, keep in the pool no more than
// the bodies in flight at once, waste less than one piece per body, and
// pass from the server's spool to the store's and back.
//
// 64 KiB: a 30-second voicemail (480,000 bytes) is 8 pieces, 8 vectors of
// a pwritev; a read and a pool call per 64 KiB cost nothing next to
// copying and summing them; and a small body takes no more than the
// 64 KiB buffer it took before.
package pieces

import "sync"

// Size is the capacity of every piece.
const Size = 64 << 10

type piece = [Size]byte

var pool = sync.Pool{New: func() any { return new(piece) }}

// Get returns an empty piece of Size bytes' capacity.
func Get() []byte { return pool.Get().(*piece)[:0] }

// Put gives back a piece Get returned (or a slice of it), once nothing
// refers to it any more.
func Put(b []byte) { pool.Put((*piece)(b[:Size])) }
