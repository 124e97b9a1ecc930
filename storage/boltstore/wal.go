package boltstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/embeddedum/um"
	bolt "go.etcd.io/bbolt"
)

// The log. The package documentation explains the design; this file has
// the format, the writer's part of the committer and the replay.
//
// log/<16 hex digits> is a segment, named by an increasing number. Each
// segment is one epoch of the log: it starts with a base frame, then holds
// frames appended in batches, each batch written with one write. A frame is
//
//	body length uint32, head length uint32, CRC-32C of the head uint32,
//	head, data (the rest of the body)
//
// and a head starts with its kind byte and the bbolt transaction ID that
// applies it:
//
//	base:    kind, txid of the synced state the epoch starts from, the
//	         segment's number, that state's meta page (metaCopy bytes); no data
//	lane:    kind, the base's txid, the base segment's number, the lane's
//	         index (uint64 each); no data: the first frame of the epoch's
//	         other segments
//	early:   kind, txid of the epoch's first batch, the horizon (uint64):
//	         commits of the epoch up to the horizon may precede their
//	         frames on disk; no data
//	mark:    kind, txid of a synced commit about to be made; no data
//	deposit: kind, txid, the batch's writes and this one's place among
//	         them (uvarint each), mailbox, folder (uvarint length, bytes), limits
//	         (uvarint messages, varint recorded time), CRC-32C uint32 of the
//	         data, the message record (uvarint length, record.go); the data
//	         is the content
//	flags, place, remove: kind, txid, batch size and place as a deposit's,
//	         then the write's arguments (logged.go); no data
//
// The head's checksum and the content's own cover the whole frame, so the
// content is summed once, when it is read in, and written straight from
// where it was read. Integers are big-endian, except the meta page, which
// is bbolt's own bytes. A content of a deposit stays in its segment for
// good: the segment bucket maps its key to the segment, offset and size,
// and Open returns that section of the segment file.
const (
	logDir     = "log"
	frameHead  = 12
	segLimit   = 64 << 20 // a segment past this ends its epoch
	epochLimit = 256      // deposits per epoch before a checkpoint
	chunkLimit = 64       // deposits per logged transaction
	segBatch   = 8        // segments created at once, with one directory fsync
	metaCopy   = 16 + 64  // bbolt's page header and meta
	maxFrame   = 1 << 30
)

// Frame kinds. A deposit applied with a synced commit (when the database's
// memory map had too little room to keep the base pinned) is not one that
// recovery must distrust the database for.
const (
	kindBase          = 1
	kindDeposit       = 2
	kindDepositSynced = 3
	kindLane          = 4
	kindFlags         = 5 // a flagWrite (logged.go)
	kindPlace         = 8 // a placeWrite
	kindRemove        = 9 // a removeWrite
	kindEarly         = 6 // the epoch applies logWrites before their sync, up to a horizon txid
	kindMark          = 7 // the commit of this txid is a synced one
)

func isLogWrite(kind byte) bool { return kind == kindFlags || kind == kindPlace || kind == kindRemove }

// maxLanes bounds the segments an epoch writes at once. A batch of n
// deposits goes to min(n, maxLanes) segments, written and fdatasynced in
// parallel: one file takes one writer at a time (the kernel locks it), and
// the disk flushes several files faster than one stream of the same bytes.
const maxLanes = 4

// bucketSeg maps the key of a content kept in a log segment to where it is:
// segment number, offset, size (uint64 each).
var bucketSeg = []byte("seg")

// errLogBroken is wrapped by every write after a failure that left the
// database behind the log; reopening the store replays the log.
var errLogBroken = errors.New("boltstore: the log and the database disagree after a failed write; reopen the store")

type segLoc struct {
	seq       uint64
	off, size int64
}

func (l segLoc) bytes() []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 24), l.seq)
	b = binary.BigEndian.AppendUint64(b, uint64(l.off))
	return binary.BigEndian.AppendUint64(b, uint64(l.size))
}

func parseSegLoc(v []byte) (segLoc, error) {
	if len(v) != 24 {
		return segLoc{}, fmt.Errorf("%w: segment location is %d bytes", ErrCorrupt, len(v))
	}
	return segLoc{binary.BigEndian.Uint64(v), int64(binary.BigEndian.Uint64(v[8:])), int64(binary.BigEndian.Uint64(v[16:]))}, nil
}

// segLocOf returns where content k lives when it is in a segment.
func segLocOf(tx *bolt.Tx, k blobKey) (segLoc, bool, error) {
	b := tx.Bucket(bucketSeg)
	if b == nil {
		return segLoc{}, false, nil
	}
	v := b.Get(k[:])
	if v == nil {
		return segLoc{}, false, nil
	}
	l, err := parseSegLoc(v)
	return l, err == nil, err
}

func segPath(dir string, seq uint64) string {
	return filepath.Join(dir, logDir, fmt.Sprintf("%016x", seq))
}

func (s *Store) segPath(seq uint64) string { return segPath(s.dir, seq) }

// deposit is one Append as the log holds it and as it is applied.
type deposit struct {
	mailbox, folder string
	lim             um.Limits
	rec             *record // blob key, inline bit, size; no folder or UID
	sum             uint32
	data            chunks // the content

	loc    segLoc     // where data landed, set before apply
	stored um.Message // the result of apply
}

// apply records d in tx, as Append always has.
func (d *deposit) apply(tx *bolt.Tx) error {
	mb, err := getMailbox(tx, d.mailbox)
	if err != nil {
		return err
	}
	if !d.lim.IsZero() && d.folder != um.Trash {
		if err := mb.admit(d.lim, 1, d.rec.m.Duration); err != nil {
			return err
		}
	}
	if d.stored, err = mb.add(d.folder, d.rec); err != nil {
		return err
	}
	k := d.rec.blob
	if _, err := refBlob(tx, k, +1); err != nil {
		return err
	}
	if err := putSum(tx, k, d.sum); err != nil {
		return err
	}
	if d.rec.inline {
		return tx.Bucket(bucketContents).Put(k[:], d.data.bytes())
	}
	return tx.Bucket(bucketSeg).Put(k[:], d.loc.bytes())
}

// newFrame returns the start of a frame, up to and with its head, for a
// body of head and dataLen more bytes.
func newFrame(head []byte, dataLen int) []byte {
	b := make([]byte, 0, frameHead+len(head))
	b = binary.BigEndian.AppendUint32(b, uint32(len(head)+dataLen))
	b = binary.BigEndian.AppendUint32(b, uint32(len(head)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(head, castagnoli))
	return append(b, head...)
}

// depositHead returns d's frame up to its content, which follows it; d is
// number idx of the n deposits of transaction txid.
func depositHead(kind byte, txid uint64, n, idx int, d *deposit) []byte {
	h := make([]byte, 0, 128+len(d.mailbox)+len(d.folder))
	h = append(h, kind)
	h = binary.BigEndian.AppendUint64(h, txid)
	h = binary.AppendUvarint(h, uint64(n))
	h = binary.AppendUvarint(h, uint64(idx))
	h = appendString(h, d.mailbox)
	h = appendString(h, d.folder)
	h = binary.AppendUvarint(h, uint64(max(d.lim.MaxMessages, 0)))
	h = binary.AppendVarint(h, int64(d.lim.MaxRecordedTime))
	h = binary.BigEndian.AppendUint32(h, d.sum)
	r := encodeRecord(d.rec)
	h = binary.AppendUvarint(h, uint64(len(r)))
	h = append(h, r...)
	return newFrame(h, int(d.data.size()))
}

// parseDeposit decodes a deposit frame whose head and data readFrames
// checked.
func parseDeposit(fr frame) (*deposit, error) {
	d := decoder{b: fr.head[9:]}
	d.uvarint()
	d.uvarint()
	dep := &deposit{rec: new(record)}
	if len(fr.data) > 0 {
		dep.data = chunks{fr.data}
	}
	dep.mailbox = d.string()
	dep.folder = d.string()
	dep.lim.MaxMessages = int(d.uvarint())
	dep.lim.MaxRecordedTime = time.Duration(d.varint())
	if v := d.bytes(4); v != nil {
		dep.sum = binary.BigEndian.Uint32(v)
	}
	n := d.uvarint()
	if d.err != nil || n != uint64(len(d.b)) {
		return nil, fmt.Errorf("deposit frame cut short")
	}
	if err := decodeRecord(d.b, dep.rec); err != nil {
		return nil, err
	}
	if int64(len(fr.data)) != dep.rec.m.Size {
		return nil, fmt.Errorf("deposit frame holds %d bytes of content, its record says %d", len(fr.data), dep.rec.m.Size)
	}
	return dep, nil
}

// depositPlace returns the batch size and the place of a deposit head.
func depositPlace(head []byte) (n, idx uint64, ok bool) {
	d := decoder{b: head[9:]}
	n, idx = d.uvarint(), d.uvarint()
	return n, idx, d.err == nil && idx < n && n <= chunkLimit
}

// depositSum is where a deposit head holds its content's checksum: after
// kind, txid, batch size, place, mailbox, folder and limits.
func depositSum(head []byte) (uint32, bool) {
	d := decoder{b: head[9:]}
	d.uvarint()
	d.uvarint()
	d.string()
	d.string()
	d.uvarint()
	d.varint()
	v := d.bytes(4)
	if d.err != nil {
		return 0, false
	}
	return binary.BigEndian.Uint32(v), true
}

// frame is one frame read back from a segment.
type frame struct {
	kind       byte
	txid       uint64
	seq        uint64 // its segment
	off        int64  // of the frame in the segment
	head, data []byte
	n, idx     uint64 // of a deposit: the batch's size, its place in it
}

// dataOff is where the frame's data starts in its segment.
func (fr frame) dataOff() int64 { return fr.off + frameHead + int64(len(fr.head)) }

// readFrames reads the frames of segment seq from the start, stopping at
// the first that is cut short, fails a checksum or breaks the order (the
// first must be a base or a lane, later ones deposits whose txid goes up):
// everything past it was never acknowledged.
func readFrames(dir string, seq uint64) ([]frame, error) {
	f, err := os.Open(segPath(dir, seq))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var out []frame
	var hdr [frameHead]byte
	for off := int64(0); off+frameHead <= fi.Size(); {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			break
		}
		n, hn := int64(binary.BigEndian.Uint32(hdr[:])), int64(binary.BigEndian.Uint32(hdr[4:]))
		if hn < 9 || hn > n || n > maxFrame || off+frameHead+n > fi.Size() {
			break
		}
		body := make([]byte, n)
		if _, err := f.ReadAt(body, off+frameHead); err != nil {
			break
		}
		fr := frame{kind: body[0], txid: binary.BigEndian.Uint64(body[1:9]), seq: seq, off: off, head: body[:hn], data: body[hn:]}
		if crc32.Checksum(fr.head, castagnoli) != binary.BigEndian.Uint32(hdr[8:]) {
			break
		}
		first := len(out) == 0
		start := fr.kind == kindBase || fr.kind == kindLane
		isDep := fr.kind == kindDeposit || fr.kind == kindDepositSynced
		isNote := fr.kind == kindEarly || fr.kind == kindMark
		if first != start || (!start && !isDep && !isNote && !isLogWrite(fr.kind)) {
			break
		}
		if fr.kind == kindEarly && (len(fr.head) != 1+8+8 || len(fr.data) != 0) {
			break
		}
		if fr.kind == kindMark && (len(fr.head) != 1+8 || len(fr.data) != 0) {
			break
		}
		if fr.kind == kindBase && (len(fr.head) != 1+8+8+metaCopy || len(fr.data) != 0) {
			break
		}
		if fr.kind == kindLane && (len(fr.head) != 1+8+8+8 || len(fr.data) != 0) {
			break
		}
		if !first {
			if fr.txid < out[len(out)-1].txid || (len(out) == 1 && fr.txid <= out[0].txid) {
				break
			}
			var ok bool
			if fr.n, fr.idx, ok = depositPlace(fr.head); !ok && !isNote {
				break
			}
			if !isDep && len(fr.data) != 0 {
				break
			}
			if sum, ok := depositSum(fr.head); isDep && (!ok || crc32.Checksum(fr.data, castagnoli) != sum) {
				break
			}
		}
		out = append(out, fr)
		off += frameHead + n
	}
	return out, nil
}

// wholeBatches orders the deposit frames of an epoch whose base has txid
// base by transaction and place, and keeps the transactions, one after
// another from the base's, whose every frame is there: the first with a
// frame missing (a batch a crash interrupted, never acknowledged) ends the
// log, since no batch is written before the one before it was synced.
func wholeBatches(base uint64, frames []frame) []frame {
	slices.SortStableFunc(frames, func(a, b frame) int {
		if a.txid != b.txid {
			return cmpU64(a.txid, b.txid)
		}
		return cmpU64(a.idx, b.idx)
	})
	var out []frame
	next := base + 1
	for len(frames) > 0 {
		fr := frames[0]
		n := int(fr.n)
		if fr.txid != next || len(frames) < n {
			break
		}
		whole := true
		for i, g := range frames[:n] {
			if g.txid != fr.txid || g.n != fr.n || g.idx != uint64(i) || (g.kind == kindDepositSynced) != (fr.kind == kindDepositSynced) {
				whole = false
				break
			}
		}
		if !whole {
			break
		}
		out = append(out, frames[:n]...)
		frames = frames[n:]
		next++
	}
	return out
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// segments lists the segment numbers in dir's log directory, in order.
func segments(dir string) ([]uint64, error) {
	ents, err := os.ReadDir(filepath.Join(dir, logDir))
	if err != nil {
		return nil, err
	}
	var seqs []uint64
	for _, e := range ents {
		if len(e.Name()) != 16 {
			continue
		}
		if n, err := strconv.ParseUint(e.Name(), 16, 64); err == nil {
			seqs = append(seqs, n)
		}
	}
	slices.Sort(seqs)
	return seqs, nil
}

// readMetaTxid returns the highest txid among um.db's two meta pages that
// pass bbolt's own checks (magic, version, checksum), and 0 when none does.
// It reads the file itself: the pages that meta names may be a state never
// synced, which opening it with bbolt would read.
func readMetaTxid(f *os.File) (uint64, int, error) {
	best, pageSize := uint64(0), 0
	for slot := 0; slot < 2; slot++ {
		ps := os.Getpagesize()
		if slot == 1 && pageSize != 0 {
			ps = pageSize
		}
		b := make([]byte, metaCopy)
		if _, err := f.ReadAt(b, int64(slot*ps)); err != nil {
			if errors.Is(err, io.EOF) {
				continue
			}
			return 0, 0, err
		}
		txid, size, ok := parseMeta(b)
		if !ok {
			continue
		}
		if slot == 0 {
			pageSize = size
		}
		best = max(best, txid)
	}
	return best, pageSize, nil
}

// bbolt's meta: magic, version, page size, flags (uint32 each), root
// bucket (16 bytes), freelist, high water mark, txid, checksum (uint64
// each), in the machine's byte order, after a 16-byte page header.
const (
	boltMagic   = 0xED0CDAED
	boltVersion = 2
)

func parseMeta(page []byte) (txid uint64, pageSize int, ok bool) {
	m := page[16:metaCopy]
	e := binary.NativeEndian
	if e.Uint32(m) != boltMagic || e.Uint32(m[4:]) != boltVersion {
		return 0, 0, false
	}
	h := fnv.New64a()
	h.Write(m[:56])
	if h.Sum64() != e.Uint64(m[56:]) {
		return 0, 0, false
	}
	return e.Uint64(m[48:]), int(e.Uint32(m[8:])), true
}

// mmapFloor is the least memory map bbolt can have for a database whose
// pages reach size: bbolt maps powers of two from 32 KiB to 1 GiB, then
// whole GiBs.
func mmapFloor(size int64) int64 {
	for i := 15; i <= 30; i++ {
		if size <= 1<<i {
			return 1 << i
		}
	}
	const step = 1 << 30
	return (size + step - 1) / step * step
}

// initialMmap is the memory map bbolt is opened with: address space only,
// so that the pinned base of an epoch (below) rarely meets a remap.
var initialMmap = func() int64 {
	if strconv.IntSize == 32 {
		return 32 << 20
	}
	return 256 << 20
}()

// opNeed bounds the database pages a deposit can add: a new page for each
// node on its paths (a few dozen at most) and its record and small content.
func opNeed(d *deposit) int64 {
	n := int64(256<<10) + 4*int64(len(d.rec.m.CallerName)+len(d.rec.m.CallerNumber)+len(d.rec.m.Transcript)+len(d.rec.m.AudioType)+64)
	if d.rec.inline {
		n += 4 * d.data.size()
	}
	for _, k := range d.rec.m.Keywords {
		n += 4 * int64(len(k)+8)
	}
	return n
}

// reserve bounds what a checkpoint and the freelist of the commits of an
// epoch add.
func reserve(highWater int64) int64 { return 1<<20 + highWater/256 }

// recovery is what Open found in the log before opening bbolt.
type recovery struct {
	nextSeq  uint64  // the number for the next segment
	replay   []frame // deposit frames to apply again, from the base on
	seq      uint64  // their segment
	claimed  uint64  // the highest txid the epoch's frames claim
	need     int64   // database pages the replay may add
	restored bool    // the base's meta page was written back to um.db
}

// recoverLog looks at the newest epoch of the log and decides whether
// um.db can be trusted as it is. It can unless a deposit was applied with
// an unsynced commit at or after the txid of um.db's newest meta page:
// every such commit is preceded by its synced frame, and every synced commit
// after the epoch's frames has a larger txid. When it cannot, recoverLog
// writes the epoch's base meta page back over both of um.db's, so that
// bbolt opens the synced state the epoch started from (whose pages were
// kept from reuse while the epoch ran), and returns the frames to apply
// again. dbf is um.db, open and locked.
func recoverLog(dir string, dbf *os.File) (*recovery, error) {
	if err := os.MkdirAll(filepath.Join(dir, logDir), 0o700); err != nil {
		return nil, err
	}
	seqs, err := segments(dir)
	if err != nil {
		return nil, err
	}
	rc := &recovery{nextSeq: 1}
	if len(seqs) > 0 {
		rc.nextSeq = seqs[len(seqs)-1] + 1
	}
	var frames []frame
	for i := len(seqs) - 1; i >= 0; i-- {
		fs, err := readFrames(dir, seqs[i])
		if err != nil {
			return nil, err
		}
		if len(fs) > 0 && fs[0].kind == kindBase && binary.BigEndian.Uint64(fs[0].head[9:]) == seqs[i] {
			frames, rc.seq = fs, seqs[i]
			// The epoch's other lanes were taken after its base.
			for _, seq := range seqs[i+1:] {
				ls, err := readFrames(dir, seq)
				if err != nil {
					return nil, err
				}
				if len(ls) > 0 && ls[0].kind == kindLane && binary.BigEndian.Uint64(ls[0].head[9:]) == rc.seq && ls[0].txid == fs[0].txid {
					frames = append(frames, ls[1:]...)
				}
			}
			break
		}
	}
	if len(frames) == 0 {
		return rc, nil
	}
	// Every frame read counts, also those past a batch with a frame
	// missing: a frame lost after its batch was applied (damage, not a
	// crash) must not make um.db trusted when its state is not synced.
	//
	// An epoch with early commits (kindEarly) may have applied a commit
	// whose frame never reached the disk, at any txid up to its horizon:
	// only a kindMark frame vouches for a synced commit below that.
	var unsynced, mark uint64
	var batches []frame
	for _, fr := range frames[1:] {
		switch fr.kind {
		case kindDeposit, kindFlags, kindPlace, kindRemove:
			unsynced = max(unsynced, fr.txid)
		case kindEarly:
			horizon := binary.BigEndian.Uint64(fr.head[9:])
			unsynced = max(unsynced, horizon)
			rc.claimed = max(rc.claimed, horizon)
		case kindMark:
			mark = max(mark, fr.txid)
		}
		if fr.kind != kindEarly && fr.kind != kindMark {
			batches = append(batches, fr)
		}
		rc.claimed = max(rc.claimed, fr.txid)
	}
	deps := wholeBatches(frames[0].txid, batches)
	m, pageSize, err := readMetaTxid(dbf)
	if err != nil {
		return nil, err
	}
	if unsynced == 0 || m > unsynced || (mark > 0 && m >= mark) {
		return rc, nil
	}
	base := frames[0].head[17:]
	if _, ps, ok := parseMeta(base); ok && pageSize == 0 {
		pageSize = ps
	}
	if _, _, ok := parseMeta(base); !ok || pageSize == 0 {
		return nil, fmt.Errorf("%w: the log's base meta page is not valid", ErrCorrupt)
	}
	for slot := 0; slot < 2; slot++ {
		p := slices.Clone(base)
		binary.NativeEndian.PutUint64(p, uint64(slot))
		if _, err := dbf.WriteAt(p, int64(slot*pageSize)); err != nil {
			return nil, err
		}
	}
	if err := fdatasync(dbf); err != nil {
		return nil, err
	}
	rc.restored = true
	rc.replay = deps
	for _, fr := range rc.replay {
		rc.need += 256<<10 + 4*int64(len(fr.head))
		if len(fr.data) <= inlineMax {
			rc.need += 4 * int64(len(fr.data))
		}
	}
	return rc, nil
}

// segContent is a content read out of its log segment: a section of the
// segment file, which seeks like a content file of its own.
type segContent struct {
	*io.SectionReader
	f *os.File
}

func (c segContent) Close() error { return c.f.Close() }

// openSeg opens the content at l.
func (s *Store) openSeg(l segLoc) (segContent, error) {
	f, err := os.Open(s.segPath(l.seq))
	if err != nil {
		return segContent{}, err
	}
	return segContent{io.NewSectionReader(f, l.off, l.size), f}, nil
}

// sweepSegments deletes the log segments older than this process's that
// no content is in any more. The newest epoch's segment is among them once
// Open has checkpointed, and recovery then trusts um.db, so none is needed
// for recovery.
func (s *Store) sweepSegments(ctx context.Context) {
	seqs, err := segments(s.dir)
	if err != nil {
		s.logf("boltstore: sweep log: %v", err)
		return
	}
	used := make(map[uint64]bool)
	if err := s.view(ctx, func(tx *bolt.Tx) error {
		clear(used)
		return tx.Bucket(bucketSeg).ForEach(func(_, v []byte) error {
			l, err := parseSegLoc(v)
			if err != nil {
				return err
			}
			used[l.seq] = true
			return nil
		})
	}); err != nil {
		if ctx.Err() == nil {
			s.logf("boltstore: sweep log: %v", err)
		}
		return
	}
	for _, seq := range seqs {
		if seq >= s.firstSeq || used[seq] {
			continue
		}
		if err := os.Remove(s.segPath(seq)); err != nil && !isNotExist(err) {
			s.logf("boltstore: sweep log: %v", err)
		}
	}
}
