package upstream

import "github.com/google/uuid"

// SetAfterAppend installs a hook that runs after each successful APPEND;
// when it returns true the engine drops the connection as if the server's
// answer had been lost.
func SetAfterAppend(e *Engine, f func() bool) { e.afterAppend = f }

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
