package upstream

import "bytes"

// An APPEND carries the voicemail as a literal. go-imap's client (v2
// beta.8) sends a literal over 4 KiB synchronizing even when the server
// offers LITERAL+ (RFC 7888): it announces {N}, waits a round trip for
// the server's "+", then sends the message. Where the server offers
// LITERAL+ and sendAppend asks for it (guard.plus), the guard turns the
// announcement into {N+} on its way out and answers go-imap's wait with a
// continuation request of its own, given to go-imap between two of the
// server's responses: the message follows the command at once, as RFC
// 7888 allows, and an upload costs one round trip.

// continuation is the continuation request the guard gives go-imap for
// an announcement it made non-synchronizing.
var continuation = []byte("+ LITERAL+\r\n")

// Write follows the framing of what go-imap sends (so a message's bytes
// are never taken for an announcement) and makes the next synchronizing
// literal non-synchronizing when asked.
func (g *guard) Write(p []byte) (int, error) {
	out, cont := g.rewrite(p)
	if _, err := g.Conn.Write(out); err != nil {
		return 0, err
	}
	if cont {
		g.mu.Lock()
		g.inject, g.poked = true, true
		// go-imap's reader may be waiting for the server, which has nothing
		// to say until the literal comes: a deadline in the past wakes it
		// (Read tells a wake-up from a timeout).
		g.applyLocked()
		g.mu.Unlock()
	}
	return len(p), nil
}

// rewrite returns p with the first synchronizing literal announcement
// made non-synchronizing when g.plus asks for it, and whether it was.
func (g *guard) rewrite(p []byte) ([]byte, bool) {
	var out []byte
	last, cont := 0, false
	for i := 0; i < len(p); {
		if g.wlit > 0 {
			k := int(min(g.wlit, int64(len(p)-i)))
			g.wlit -= int64(k)
			i += k
			continue
		}
		seg := p[i:]
		if nl := bytes.IndexByte(seg, '\n'); nl >= 0 {
			seg = seg[:nl+1]
		}
		g.wtail = keepTail(g.wtail, seg)
		i += len(seg)
		if seg[len(seg)-1] != '\n' {
			continue
		}
		n, ok := literalSize(g.wtail)
		sync := ok && !bytes.HasSuffix(g.wtail, []byte("+}\r\n"))
		g.wtail = g.wtail[:0]
		if !ok || n < 0 {
			continue
		}
		g.wlit = n
		// The brace must be in this write to be preceded by "+".
		if brace := i - 3; sync && brace >= 0 && p[brace] == '}' && g.plus.CompareAndSwap(true, false) {
			out = append(append(out, p[last:brace]...), '+')
			last, cont = brace, true
		}
	}
	if out == nil {
		return p, false
	}
	return append(out, p[last:]...), cont
}

// injectDue tells whether a continuation request waits for the end of the
// server's current response.
func (g *guard) injectDue() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inject
}

// takeInject takes the continuation request due, if any, and puts the
// read deadline back.
func (g *guard) takeInject() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.inject {
		return false
	}
	g.inject = false
	if g.poked {
		g.poked = false
		g.applyLocked()
	}
	return true
}

// takePoke tells whether a read timed out because Write woke it, and puts
// the read deadline back.
func (g *guard) takePoke() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.poked {
		return false
	}
	g.poked = false
	g.applyLocked()
	return true
}
