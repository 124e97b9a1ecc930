package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/embeddedum/um"
)

// A message record is a compact binary encoding, not JSON: List decodes one
// per message, and at 10,000 messages the difference is the bulk of its time.
//
//	version byte (1)
//	ID [16], blob key [16]
//	bits byte (1 urgent, 2 raw, 4 content in the contents bucket), flags byte
//	Size, Duration varint; Time, Added: byte (0 zero, 1 set), varint seconds, uvarint nanoseconds
//	CallerNumber, CallerName, AudioType, Transcript: uvarint length, bytes
//	keyword count uvarint, then each: uvarint length, bytes
//	ModSeq uvarint (schema 3 on; a record without it has ModSeq 1)
//
// Folder and UID are not in the record: they are where it is kept.
const recordVersion = 1

const (
	bitUrgent = 1 << iota
	bitRaw
	bitInline
)

// blobKey names a content: a content file, or a value in the contents
// bucket.
type blobKey [16]byte

// record is a message as stored.
type record struct {
	m      um.Message
	blob   blobKey
	inline bool // the content is in the contents bucket, not a file
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func encodeRecord(r *record) []byte {
	m := &r.m
	b := make([]byte, 0, 64+len(m.CallerNumber)+len(m.CallerName)+len(m.AudioType)+len(m.Transcript))
	b = append(b, recordVersion)
	b = append(b, m.ID[:]...)
	b = append(b, r.blob[:]...)
	var bits byte
	if m.Urgent {
		bits |= bitUrgent
	}
	if m.Raw {
		bits |= bitRaw
	}
	if r.inline {
		bits |= bitInline
	}
	b = append(b, bits, byte(m.Flags))
	b = binary.AppendVarint(b, m.Size)
	b = binary.AppendVarint(b, int64(m.Duration))
	b = appendTime(b, m.Time)
	b = appendTime(b, m.Added)
	b = appendString(b, m.CallerNumber)
	b = appendString(b, m.CallerName)
	b = appendString(b, m.AudioType)
	b = appendString(b, m.Transcript)
	b = binary.AppendUvarint(b, uint64(len(m.Keywords)))
	for _, k := range m.Keywords {
		b = appendString(b, k)
	}
	return binary.AppendUvarint(b, m.ModSeq)
}

var errShort = errors.New("record cut short")

// decoder reads a record; the first error sticks and later reads return zero
// values, so decodeRecord checks once at the end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) bytes(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.err = errShort
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if v := d.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errShort
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err = errShort
		return ""
	}
	return string(d.bytes(int(n))) // copies out of the mmap
}

func (d *decoder) time() time.Time {
	if d.byte() == 0 {
		return time.Time{}
	}
	sec := d.varint()
	return time.Unix(sec, int64(d.uvarint())).UTC() // um keeps times in UTC
}

// decodeRecord decodes v, which may point into the database's memory map;
// the result shares nothing with it.
func decodeRecord(v []byte, r *record) error {
	d := decoder{b: v}
	if ver := d.byte(); d.err == nil && ver != recordVersion {
		return fmt.Errorf("%w: message record version %d", ErrCorrupt, ver)
	}
	m := &r.m
	copy(m.ID[:], d.bytes(16))
	copy(r.blob[:], d.bytes(16))
	bits := d.byte()
	m.Urgent = bits&bitUrgent != 0
	m.Raw = bits&bitRaw != 0
	r.inline = bits&bitInline != 0
	m.Flags = um.Flags(d.byte())
	m.Size = d.varint()
	m.Duration = time.Duration(d.varint())
	m.Time = d.time()
	m.Added = d.time()
	m.CallerNumber = d.string()
	m.CallerName = d.string()
	m.AudioType = d.string()
	m.Transcript = d.string()
	if n := d.uvarint(); n > 0 && n <= uint64(len(d.b)) {
		m.Keywords = make([]string, n)
		for i := range m.Keywords {
			m.Keywords[i] = d.string()
		}
	} else if n > 0 {
		d.err = errShort
	}
	m.ModSeq = 1 // what the migration to schema 3 gave every message
	if d.err == nil && len(d.b) > 0 {
		m.ModSeq = d.uvarint()
	}
	if d.err != nil {
		return fmt.Errorf("%w: message record: %v", ErrCorrupt, d.err)
	}
	return nil
}

// loc is where a message is: its folder's UIDVALIDITY and its UID.
type loc struct {
	validity uint32
	uid      um.UID
}

func (l loc) bytes() []byte {
	return binary.BigEndian.AppendUint32(putU32(make([]byte, 0, 8), l.validity), uint32(l.uid))
}

func parseLoc(v []byte) (loc, error) {
	if len(v) != 8 {
		return loc{}, fmt.Errorf("%w: message location is %d bytes", ErrCorrupt, len(v))
	}
	return loc{binary.BigEndian.Uint32(v), um.UID(binary.BigEndian.Uint32(v[4:]))}, nil
}

// folderMeta is a folder's value in the f bucket.
type folderMeta struct {
	validity uint32
	uidNext  um.UID
}

func (f folderMeta) bytes() []byte {
	return binary.BigEndian.AppendUint32(putU32(make([]byte, 0, 8), f.validity), uint32(f.uidNext))
}

func parseFolder(v []byte) (folderMeta, error) {
	l, err := parseLoc(v)
	return folderMeta{l.validity, l.uid}, err
}

func uidKey(uid um.UID) []byte { return putU32(make([]byte, 0, 4), uint32(uid)) }
