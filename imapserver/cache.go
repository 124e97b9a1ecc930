package imapserver

import (
	"bufio"
	"bytes"
	"container/list"
	"encoding/binary"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-message/textproto"
	"github.com/google/uuid"
)

// DefaultRenderCacheBytes is the default of Options.RenderCacheBytes: 3
// MiB, about 550 voicemails with their ENVELOPE and BODYSTRUCTURE (each is
// charged about 5.7 KB, more with a long transcript), or 1,500 voicemails
// appended as e-mail (2.1 KB each). On imaptest's stress run (100 users)
// it answers 82% of lookups; 4 MiB answered 94%, for 12% more commands per
// CPU second and about 3 MiB more peak memory (BENCHMARKS.md).
const DefaultRenderCacheBytes = 3 << 20

// itemOverhead is what a cached message costs beyond its rendered bytes,
// strings and encoded ENVELOPE and BODYSTRUCTURE: the Email, its MIME
// parts and their maps, and the list and map entries. A voicemail without
// transcript, envelope and structure built, measured 5.4 KB of heap in
// all; charged 5.7 KB (TestRawCharge).
const itemOverhead = 3712

// rawItemOverhead is itemOverhead for an appended e-mail (a Raw message),
// whose Email holds no rendering: its header, layout, ENVELOPE and
// BODYSTRUCTURE are charged as they are built. Measured with them all
// built: 0.95 KB of heap for a short e-mail, 2.0 KB for a voicemail
// appended as e-mail; charged 1.1 and 2.1 KB (TestRawCharge).
const rawItemOverhead = 416

// renderKey names what a rendering depends on besides the message: the
// voice mailbox, which goes into the To header.
type renderKey struct {
	id      uuid.UUID
	mailbox string
}

// rendered is a message as IMAP shows it: the rendered e-mail, and, once a
// client asked for them, its ENVELOPE, BODY and BODYSTRUCTURE as sent on
// the wire. Rendering
// depends only on the message's immutable fields (not on flags, keywords,
// folder or UID), so one rendered serves every session and folder that
// shows the message. Its fields are never modified once set, so sessions
// share the values without copying.
type rendered struct {
	key    renderKey
	digest uint64 // renderDigest of the message rendered
	email  *um.Email
	elem   *list.Element // in renderCache.lru; nil once evicted
	cost   int64

	mu sync.Mutex // guards env, bs, body, head, lay and cost after creation
	// env, bs and body are the encoded ENVELOPE, BODYSTRUCTURE and BODY,
	// a few hundred bytes each and no pointers: the parsed values of a
	// voicemail appended as e-mail took 0.6 and 2.2 KB of heap, over half
	// of what the message cost, for the garbage collector to scan.
	env      []byte
	bs, body []byte
	// head and lay are kept for Raw messages only: the top-level header
	// block, read alone or taken from the layout, and the layout.
	head []byte
	lay  *layout
}

// renderCache is a server-wide LRU of rendered messages, bounded by the
// bytes it charges for them. Without it every session re-renders a
// message and re-parses its header on each FETCH ENVELOPE, which was a
// sixth of the server's CPU time under load.
type renderCache struct {
	render func(um.Message, um.RenderOptions) *um.Email // immutable after New

	hits, misses atomic.Uint64 // lookups by get, for Stats

	mu    sync.Mutex
	max   int64 // <= 0: nothing is kept
	used  int64
	items map[renderKey]*rendered
	lru   list.List // front: most recently used; values are *rendered
}

func newRenderCache(maxBytes int64) *renderCache {
	return &renderCache{max: maxBytes, items: make(map[renderKey]*rendered), render: um.RenderEmail}
}

// digestSeed seeds renderDigest for the life of the process.
var digestSeed = maphash.MakeSeed()

// renderDigest digests the fields of m that rendering reads besides its ID
// (which the cache key holds): a kept rendering serves m when the digests
// match. Message IDs are unique and these fields immutable, so this only
// guards against a store handing back something else under a known ID;
// a copy of the message to compare with took 220 bytes per message.
func renderDigest(m *um.Message) uint64 {
	var h maphash.Hash
	h.SetSeed(digestSeed)
	var b [8]byte
	num := func(v uint64) {
		binary.LittleEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	str := func(s string) {
		num(uint64(len(s)))
		h.WriteString(s)
	}
	flags := uint64(0)
	if m.Raw {
		flags |= 1
	}
	if m.Urgent {
		flags |= 2
	}
	num(flags)
	num(uint64(m.Size))
	num(uint64(m.Duration))
	num(uint64(m.Time.Unix()))
	num(uint64(m.Time.Nanosecond()))
	str(m.CallerNumber)
	str(m.CallerName)
	str(m.AudioType)
	str(m.Transcript)
	return h.Sum64()
}

// get returns the rendering of m for mailbox, from the cache or made now
// and kept.
func (c *renderCache) get(m *um.Message, mailbox string, opts um.RenderOptions) *rendered {
	key := renderKey{id: m.ID, mailbox: mailbox}
	c.mu.Lock()
	digest := renderDigest(m)
	if r := c.items[key]; r != nil && r.digest == digest {
		c.lru.MoveToFront(r.elem)
		c.mu.Unlock()
		c.hits.Add(1)
		return r
	}
	c.mu.Unlock()
	c.misses.Add(1)

	// Rendered outside the lock: two sessions may render the same message
	// at once, and the later one replaces the earlier in the cache.
	opts.Mailbox = mailbox
	msg := *m
	msg.Flags, msg.Keywords, msg.Folder, msg.UID = 0, nil, "", 0
	r := &rendered{key: key, digest: digest, email: c.render(msg, opts)}
	overhead := int64(itemOverhead)
	if msg.Raw {
		overhead = rawItemOverhead
	}
	r.cost = overhead + int64(len(key.mailbox)) + int64(len(msg.CallerName)+len(msg.CallerNumber)+len(msg.AudioType)+len(msg.Transcript))
	if st := r.email.Structure(); st != nil {
		if a := audioPart(st); a != nil {
			r.cost += a.BodyStart // the rendered bytes before the audio
		}
	}
	if c.max <= 0 || r.cost > c.max {
		return r
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.items[key]; old != nil {
		c.removeLocked(old)
	}
	r.elem = c.lru.PushFront(r)
	c.items[key] = r
	c.used += r.cost
	c.evictLocked()
	return r
}

// size returns the size of m as FETCH RFC822.SIZE reports it. It renders
// messages not cached without keeping them, so a STATUS (SIZE) of a large
// folder does not push out what sessions fetch.
func (c *renderCache) size(m *um.Message, mailbox string, opts um.RenderOptions) int64 {
	c.mu.Lock()
	r := c.items[renderKey{id: m.ID, mailbox: mailbox}]
	c.mu.Unlock()
	if r != nil && r.digest == renderDigest(m) {
		return r.email.Size()
	}
	if m.Raw {
		return max(m.Size, 0)
	}
	opts.Mailbox = mailbox
	return c.render(*m, opts).Size()
}

// forget drops the renderings of messages expunged from mailbox: a
// message's rendering serves only the message, and under imaptest's
// stress run, where messages come and go hundreds of times a second, the
// expunged ones held a good part of the cache until they aged out.
func (c *renderCache) forget(mailbox string, gone []um.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range gone {
		if r := c.items[renderKey{id: gone[i].ID, mailbox: mailbox}]; r != nil {
			c.removeLocked(r)
		}
	}
}

// charge adds n bytes to what r costs, when a lazily built value is kept.
func (c *renderCache) charge(r *rendered, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r.elem == nil {
		return
	}
	r.cost += n
	c.used += n
	if r.cost > c.max {
		// Rather than empty the cache for one large message.
		c.removeLocked(r)
		return
	}
	c.evictLocked()
}

func (c *renderCache) removeLocked(r *rendered) {
	if r.elem == nil {
		return
	}
	c.lru.Remove(r.elem)
	r.elem = nil
	delete(c.items, r.key)
	c.used -= r.cost
}

func (c *renderCache) evictLocked() {
	for c.used > c.max && c.lru.Len() > 0 {
		c.removeLocked(c.lru.Back().Value.(*rendered))
	}
}

// stats returns the number of cached messages and the bytes charged.
func (c *renderCache) stats() (n int, used int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items), c.used
}

// envelope returns the encoded ENVELOPE, parsing header (which readHeader
// supplies, for a Raw message from its content) the first time.
func (c *renderCache) envelope(r *rendered, readHeader func() ([]byte, error)) ([]byte, error) {
	r.mu.Lock()
	env := r.env
	r.mu.Unlock()
	if env != nil {
		return env, nil
	}
	header, err := readHeader()
	if err != nil {
		return nil, err
	}
	env = wireOf(func(e *encoder) { writeEnvelope(e, parseEnvelope(header)) })
	r.mu.Lock()
	if r.env == nil {
		r.env = env
	} else {
		env = r.env
	}
	r.mu.Unlock()
	c.charge(r, int64(len(env)))
	return env, nil
}

// bodyStructure returns the encoded BODYSTRUCTURE (extended) or BODY,
// both encoded from what build returns the first time.
func (c *renderCache) bodyStructure(r *rendered, extended bool, build func() (imap.BodyStructure, error)) ([]byte, error) {
	r.mu.Lock()
	bs, body := r.bs, r.body
	r.mu.Unlock()
	if bs == nil {
		st, err := build()
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		cost := r.setStructureLocked(st)
		bs, body = r.bs, r.body
		r.mu.Unlock()
		c.charge(r, cost)
	}
	if extended {
		return bs, nil
	}
	return body, nil
}

// setStructureLocked keeps the encoded forms of st unless kept already,
// and returns what they cost.
func (r *rendered) setStructureLocked(st imap.BodyStructure) int64 {
	if r.bs != nil {
		return 0
	}
	r.bs = wireOf(func(e *encoder) { writeBodyStructure(e, st, true) })
	r.body = wireOf(func(e *encoder) { writeBodyStructure(e, st, false) })
	return int64(len(r.bs) + len(r.body))
}

// header returns the top-level header block of a Raw message, reading it
// (with read) the first time unless its layout has it.
func (c *renderCache) header(r *rendered, read func() ([]byte, error)) ([]byte, error) {
	r.mu.Lock()
	h := r.head
	r.mu.Unlock()
	if h != nil {
		return h, nil
	}
	h, err := read()
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	if r.head == nil {
		r.head = h
	} else {
		h = r.head
	}
	r.mu.Unlock()
	c.charge(r, int64(len(h)))
	return h, nil
}

// layout returns the layout of a Raw message, parsing its content (with
// parse, which returns the MIME tree and, when it read the message whole,
// its bytes) the first time. The same parse gives its BODYSTRUCTURE, kept
// unless built already, so a FETCH of sections and structure reads the
// message once.
func (c *renderCache) layout(r *rendered, parse func() (*entity, []byte, error)) (*layout, error) {
	r.mu.Lock()
	l := r.lay
	r.mu.Unlock()
	if l != nil {
		return l, nil
	}
	root, b, err := parse()
	if err != nil {
		return nil, err
	}
	bs := root.structure()
	r.mu.Lock()
	if r.lay != nil {
		l = r.lay
		r.mu.Unlock()
		return l, nil
	}
	l, cost := newLayout(b, root, r.head)
	r.lay, r.head = l, l.header
	cost += r.setStructureLocked(bs)
	r.mu.Unlock()
	c.charge(r, cost)
	return l, nil
}

// wireOf returns what write encodes, in a slice of its own size.
func wireOf(write func(e *encoder)) []byte {
	var buf bytes.Buffer
	w := bufio.NewWriterSize(&buf, 512)
	write(&encoder{w: w})
	w.Flush()
	return bytes.Clone(buf.Bytes())
}

// parseEnvelope parses a header block into an ENVELOPE. A header that
// does not parse gives an empty envelope rather than failing the FETCH.
func parseEnvelope(header []byte) *imap.Envelope {
	h, err := textproto.ReadHeader(headerReader(header))
	if err != nil && len(header) > 0 {
		return &imap.Envelope{}
	}
	return extractEnvelope(h)
}
