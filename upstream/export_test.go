package upstream

import (
	"net"

	"github.com/google/uuid"
)

// NewGuard puts the guard the engine keeps between go-imap's client and
// the server over c.
func NewGuard(c net.Conn) net.Conn { return newGuard(c, 1<<20, 64<<10) }

// SetAfterAppend installs a hook that runs after each successful APPEND;
// when it returns true the engine drops the connection as if the server's
// answer had been lost.
func SetAfterAppend(e *Engine, f func() bool) { e.afterAppend = f }

// SetOnFetched installs a hook that runs for each message of the answer
// to a UID FETCH as soon as the worker has read it, before the rest of the
// answer: one that panics is a bug met in the middle of an answer.
func SetOnFetched(e *Engine, f func()) { e.onFetched = f }

// SetOnUnsolicited installs a hook that runs for each FETCH the server
// sends of its own (a flag change made elsewhere) before the worker reads
// it: one that panics is a bug met outside any command of the worker's.
func SetOnUnsolicited(e *Engine, f func()) { e.onUnsolicited = f }

// SetSolo makes every worker of e added from now on back off alone, as
// before workers of one address shared what they learn: for benchmarks
// that compare the two.
func SetSolo(e *Engine) { e.solo = true }

// SetSequential makes e wait for the answer to each command before it
// sends the next (no pipelining), for benchmarks that compare the two.
func SetSequential(e *Engine) { e.sequential = true }

// ParseIDHeader reads the message ID from a header section holding the
// X-Um-Message-Id field.
func ParseIDHeader(b []byte) (uuid.UUID, bool) { return parseIDHeader(b) }
