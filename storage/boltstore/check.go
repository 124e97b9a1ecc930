package boltstore

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// ErrDamaged is returned (wrapped, with every problem named) by
// CheckReport.Err and Restore when a store's contents do not match their
// records. Nothing was changed; the report says which messages are hurt.
var ErrDamaged = errors.New("boltstore: store is damaged")

// ProblemKind says what is wrong in a Problem.
type ProblemKind int

// The kinds of problem Check finds.
const (
	// ContentMissing: the content file, or the small content kept in the
	// database, is gone.
	ContentMissing ProblemKind = iota + 1
	// ContentSize: the content is shorter or longer than its record says
	// (a truncated file).
	ContentSize
	// ContentChecksum: the content has the recorded size but not the
	// recorded CRC-32C: bytes were changed.
	ContentChecksum
	// ContentUnreadable: reading the content failed (an I/O error).
	ContentUnreadable
	// RecordDamaged: a message record, the folder it belongs to or its
	// mailbox's buckets cannot be decoded.
	RecordDamaged
	// RefCountWrong: the content's reference count differs from the
	// number of messages naming it, so a later removal would delete it too
	// early or never.
	RefCountWrong
	// IndexWrong: the mailbox's index from message ID to folder and UID
	// does not name the message where it is, or names one that is not
	// there, so the message cannot be found, or a lookup fails.
	IndexWrong
)

// String names the kind, as in "content size wrong".
func (k ProblemKind) String() string {
	switch k {
	case ContentMissing:
		return "content missing"
	case ContentSize:
		return "content size wrong"
	case ContentChecksum:
		return "content checksum wrong"
	case ContentUnreadable:
		return "content unreadable"
	case RecordDamaged:
		return "record damaged"
	case RefCountWrong:
		return "reference count wrong"
	case IndexWrong:
		return "index wrong"
	}
	return fmt.Sprintf("ProblemKind(%d)", int(k))
}

// Problem is one piece of damage Check found, with where it is.
type Problem struct {
	Mailbox string    // the voice mailbox, such as 1001
	Folder  string    // the folder, such as INBOX; empty when the mailbox itself is hurt
	UID     um.UID    // the message's UID; zero when the problem is not one message's
	ID      uuid.UUID // the message's ID, when its record could be read
	// Path is the content file, relative to the store's directory
	// (audio/3f/3f...), or for a content in a log segment the segment and
	// the offset in it (log/00000000000000a2:4096), or empty for a content
	// kept in the database.
	Path   string
	Kind   ProblemKind
	Detail string // what was found, such as "1000 bytes, the record says 48044"
}

// String names the message and what is wrong with it, as in
// "mailbox 1001 folder INBOX UID 3: content file audio/3f/3f...: content
// size wrong: 1000 bytes, the record says 48044".
func (p Problem) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mailbox %s", p.Mailbox)
	if p.Folder != "" {
		fmt.Fprintf(&b, " folder %s", p.Folder)
	}
	if p.UID != 0 {
		fmt.Fprintf(&b, " UID %d", p.UID)
	}
	switch {
	case strings.HasPrefix(p.Path, logDir+"/"):
		fmt.Fprintf(&b, ": content in the log at %s", p.Path)
	case p.Path != "":
		fmt.Fprintf(&b, ": content file %s", p.Path)
	case p.Kind != RecordDamaged && p.Kind != IndexWrong:
		b.WriteString(": content in the database")
	}
	fmt.Fprintf(&b, ": %s", p.Kind)
	if p.Detail != "" {
		fmt.Fprintf(&b, ": %s", p.Detail)
	}
	return b.String()
}

// CheckReport is what Check found.
type CheckReport struct {
	// Messages counts the message records read, damaged ones included.
	Messages int
	// Unverified counts the messages whose content was stored before this
	// package kept checksums (or by a program that did not): their content
	// is checked for presence and size only.
	Unverified int
	// Problems lists the damage, in mailbox, folder and UID order; empty
	// for a sound store.
	Problems []Problem
}

// Err returns nil for a sound store, and otherwise an error wrapping
// ErrDamaged that names every problem.
func (r *CheckReport) Err() error {
	if len(r.Problems) == 0 {
		return nil
	}
	var b strings.Builder
	for i, p := range r.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	n := fmt.Sprintf("%d problems", len(r.Problems))
	if len(r.Problems) == 1 {
		n = "1 problem"
	}
	return fmt.Errorf("%w: %s: %s", ErrDamaged, n, b.String())
}

// stored is a message record found by walk, with where it is.
type stored struct {
	mailbox, folder string
	uid             um.UID
	validity        uint32 // of the folder
	rec             record
}

func (m *stored) problem(kind ProblemKind, path, detail string) Problem {
	return Problem{Mailbox: m.mailbox, Folder: m.folder, UID: m.uid, ID: m.rec.m.ID, Path: path, Kind: kind, Detail: detail}
}

// walk calls fn for every message record in tx, in mailbox, folder (by
// UIDVALIDITY) and UID order, and bad for every one that cannot be read.
func walk(tx *bolt.Tx, fn func(m *stored) error, bad func(Problem)) error {
	return tx.Bucket(bucketMailboxes).ForEachBucket(func(name []byte) error {
		mb, err := getMailbox(tx, string(name))
		if err != nil {
			bad(Problem{Mailbox: string(name), Kind: RecordDamaged, Detail: err.Error()})
			return nil
		}
		folders := make(map[uint32]string)
		if err := mb.folders.ForEach(func(k, v []byte) error {
			fm, err := parseFolder(v)
			if err != nil {
				bad(Problem{Mailbox: mb.name, Folder: string(k), Kind: RecordDamaged, Detail: err.Error()})
				return nil
			}
			folders[fm.validity] = string(k)
			return nil
		}); err != nil {
			return err
		}
		return mb.msgs.ForEachBucket(func(vk []byte) error {
			folder, ok := folders[binary.BigEndian.Uint32(vk)]
			if !ok {
				folder = fmt.Sprintf("(UIDVALIDITY %d)", binary.BigEndian.Uint32(vk))
				bad(Problem{Mailbox: mb.name, Folder: folder, Kind: RecordDamaged, Detail: "messages of a folder that does not exist"})
			}
			return mb.msgs.Bucket(vk).ForEach(func(k, v []byte) error {
				m := &stored{mailbox: mb.name, folder: folder, validity: binary.BigEndian.Uint32(vk)}
				if len(k) == 4 {
					m.uid = um.UID(binary.BigEndian.Uint32(k))
				}
				if err := decodeRecord(v, &m.rec); err != nil || len(k) != 4 {
					if err == nil {
						err = fmt.Errorf("UID key of %d bytes", len(k))
					}
					bad(m.problem(RecordDamaged, "", err.Error()))
					return nil
				}
				return fn(m)
			})
		})
	})
}

// fileCheck is a content file to read after the transaction, with the
// messages that name it.
type fileCheck struct {
	size   int64
	sum    uint32
	hasSum bool
	msgs   []*stored
	seg    *segLoc // where the content is when it is in a log segment
}

// Check reads every message record and its content and verifies that the
// content is there, has the size the record says and, for contents stored
// with a checksum, the recorded CRC-32C; it also checks each content's
// reference count and each mailbox's index from message ID to folder and
// UID. It reads every byte of every content, so it takes as
// long as reading the store's directory, and it runs while the store
// serves: deposits and removals go on, and files a removal deletes
// meanwhile wait until Check is done. It changes nothing.
//
// The error is for a check that could not run (a closed store, ctx done);
// damage is reported in CheckReport.Problems, and CheckReport.Err turns it
// into an error.
func (s *Store) Check(ctx context.Context) (*CheckReport, error) {
	rep := &CheckReport{}
	bad := func(p Problem) { rep.Problems = append(rep.Problems, p) }
	files := make(map[blobKey]*fileCheck)
	var order []blobKey
	s.pins.hold()
	defer s.unpin()
	err := s.view(ctx, func(tx *bolt.Tx) error {
		refs := make(map[blobKey][]*stored)
		var refOrder []blobKey
		contents := tx.Bucket(bucketContents)
		found := make(map[string]map[uuid.UUID]loc) // mailbox -> where each message is
		if err := walk(tx, func(m *stored) error {
			rep.Messages++
			if found[m.mailbox] == nil {
				found[m.mailbox] = make(map[uuid.UUID]loc)
			}
			found[m.mailbox][m.rec.m.ID] = loc{m.validity, m.uid}
			k := m.rec.blob
			if refs[k] == nil {
				refOrder = append(refOrder, k)
			}
			refs[k] = append(refs[k], m)
			sum, hasSum, err := getSum(tx, k)
			if err != nil {
				bad(m.problem(ContentChecksum, "", err.Error()))
			}
			if !hasSum {
				rep.Unverified++
			}
			if !m.rec.inline {
				fc := files[k]
				if fc == nil {
					fc = &fileCheck{size: m.rec.m.Size, sum: sum, hasSum: hasSum}
					if l, ok, err := segLocOf(tx, k); err != nil {
						bad(m.problem(ContentUnreadable, "", err.Error()))
					} else if ok {
						fc.seg = &l
					}
					files[k] = fc
					order = append(order, k)
				}
				fc.msgs = append(fc.msgs, m)
				return nil
			}
			var v []byte
			if contents != nil {
				v = contents.Get(k[:])
			}
			if kind, detail := judge(v != nil, int64(len(v)), m.rec.m.Size, crc32.Checksum(v, castagnoli), sum, hasSum); kind != 0 {
				bad(m.problem(kind, "", detail))
			}
			return nil
		}, bad); err != nil {
			return err
		}
		checkIndex(tx, found, bad)
		counts := tx.Bucket(bucketBlobs)
		for _, k := range refOrder {
			var n uint32
			if v := counts.Get(k[:]); len(v) == 4 {
				n = binary.BigEndian.Uint32(v)
			}
			if ms := refs[k]; int(n) != len(ms) {
				bad(ms[0].problem(RefCountWrong, s.relPath(ms[0], files[k]), fmt.Sprintf("counted %d, %d messages name it", n, len(ms))))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: check: %w", err)
	}
	for _, k := range order {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("boltstore: check: %w", err)
		}
		fc := files[k]
		kind, detail := s.checkFile(ctx, k, fc)
		if kind == 0 {
			continue
		}
		for _, m := range fc.msgs {
			bad(m.problem(kind, s.relPath(m, fc), detail))
		}
	}
	sortProblems(rep.Problems)
	return rep, nil
}

// checkFile reads content file k and judges it against fc.
func (s *Store) checkFile(ctx context.Context, k blobKey, fc *fileCheck) (ProblemKind, string) {
	f, err := s.openContent(k, fc)
	if isNotExist(err) {
		return judge(false, 0, fc.size, 0, fc.sum, fc.hasSum)
	}
	if err != nil {
		return ContentUnreadable, err.Error()
	}
	defer f.Close()
	bufp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bufp)
	h := crc32.New(castagnoli)
	n, err := io.CopyBuffer(h, ctxReader{ctx, f}, *bufp)
	if err != nil {
		if ctx.Err() != nil {
			return 0, "" // the caller reports ctx
		}
		return ContentUnreadable, err.Error()
	}
	return judge(true, n, fc.size, h.Sum32(), fc.sum, fc.hasSum)
}

// judge compares a content found (present, of size n, with checksum got)
// with its record (size want, checksum sum when hasSum); kind 0 is sound.
func judge(present bool, n, want int64, got, sum uint32, hasSum bool) (ProblemKind, string) {
	switch {
	case !present:
		return ContentMissing, fmt.Sprintf("the record says %d bytes", want)
	case n != want:
		return ContentSize, fmt.Sprintf("%d bytes, the record says %d", n, want)
	case hasSum && got != sum:
		return ContentChecksum, fmt.Sprintf("CRC-32C %08x, recorded %08x", got, sum)
	}
	return 0, ""
}

// openContent opens content k, in its log segment or its own file.
func (s *Store) openContent(k blobKey, fc *fileCheck) (io.ReadCloser, error) {
	if fc != nil && fc.seg != nil {
		c, err := s.openSeg(*fc.seg)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	return os.Open(s.blobPath(k))
}

// relPath is the content file of m relative to the store's directory (for
// a content in a log segment, the segment and the offset after a colon),
// or empty for a content kept in the database.
func (s *Store) relPath(m *stored, fc *fileCheck) string {
	if m.rec.inline {
		return ""
	}
	if fc != nil && fc.seg != nil {
		return fmt.Sprintf("%s/%016x:%d", logDir, fc.seg.seq, fc.seg.off)
	}
	rel, err := filepath.Rel(s.dir, s.blobPath(m.rec.blob))
	if err != nil {
		return s.blobPath(m.rec.blob)
	}
	return filepath.ToSlash(rel)
}

// sortProblems orders problems by mailbox, folder and UID, keeping those of
// one message in the order found.
func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Mailbox, b.Mailbox), cmp.Compare(a.Folder, b.Folder), cmp.Compare(a.UID, b.UID))
	})
}

// checkIndex compares each mailbox's ID index with where walk found the
// messages.
func checkIndex(tx *bolt.Tx, found map[string]map[uuid.UUID]loc, bad func(Problem)) {
	_ = tx.Bucket(bucketMailboxes).ForEachBucket(func(name []byte) error {
		mb, err := getMailbox(tx, string(name))
		if err != nil {
			return nil // walk reported it
		}
		at := found[mb.name]
		indexed := 0
		_ = mb.ids.ForEach(func(k, v []byte) error {
			indexed++
			var id uuid.UUID
			copy(id[:], k)
			l, err := parseLoc(v)
			want, ok := at[id]
			switch {
			case err != nil || len(k) != len(id):
				bad(Problem{Mailbox: mb.name, ID: id, Kind: IndexWrong, Detail: fmt.Sprintf("entry of %d and %d bytes", len(k), len(v))})
			case !ok:
				bad(Problem{Mailbox: mb.name, UID: l.uid, ID: id, Kind: IndexWrong, Detail: fmt.Sprintf("names message %s at UIDVALIDITY %d UID %d, which is not there", id, l.validity, l.uid)})
			case l != want:
				folder, _ := mb.folderName(want.validity)
				bad(Problem{Mailbox: mb.name, Folder: folder, UID: want.uid, ID: id, Kind: IndexWrong, Detail: fmt.Sprintf("names UIDVALIDITY %d UID %d, the message is at UIDVALIDITY %d UID %d", l.validity, l.uid, want.validity, want.uid)})
			}
			return nil
		})
		if indexed < len(at) {
			for id, l := range at {
				if mb.ids.Get(id[:]) == nil {
					folder, _ := mb.folderName(l.validity)
					bad(Problem{Mailbox: mb.name, Folder: folder, UID: l.uid, ID: id, Kind: IndexWrong, Detail: fmt.Sprintf("message %s at UIDVALIDITY %d UID %d is not indexed", id, l.validity, l.uid)})
				}
			}
		}
		return nil
	})
}
