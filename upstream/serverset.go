package upstream

import (
	"fmt"
	"math"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// maxServerUIDs caps the UIDs the engine takes from one answer of the
// server, whatever the folder's size: four MiB of them.
const maxServerUIDs = 1 << 20

// serverUIDs expands a set of UIDs the server sent (a SEARCH result, a
// COPYUID) where real UIDs are expected. go-imap's NumSet.Nums counts with
// a uint32, so a range ending at 4294967295 never ends, and 1:4000000000
// asks for 16 GB: a set is never expanded before it is checked. A set
// with 0 or 4294967295 in it (the "*" of a range, or a UID no folder
// reaches), with sequence numbers in answer to a UID command, or with
// more UIDs than most (what can match: the messages the folder holds) or
// maxServerUIDs, is a server fault.
func serverUIDs(set imap.NumSet, most uint32, what string) ([]imap.UID, error) {
	var uids imap.UIDSet
	switch s := set.(type) {
	case nil:
		return nil, nil
	case imap.UIDSet:
		uids = s
	case imap.SeqSet:
		if len(s) == 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("%w: %s: sequence numbers where UIDs were asked for", ErrServerFault, what)
	default:
		return nil, fmt.Errorf("%w: %s: a set of %T", ErrServerFault, what, set)
	}
	limit := uint64(min(most, maxServerUIDs))
	var n uint64
	for _, r := range uids {
		if r.Start == 0 || r.Stop == 0 || r.Start == math.MaxUint32 || r.Stop == math.MaxUint32 || r.Start > r.Stop {
			return nil, fmt.Errorf("%w: %s: UID range %d:%d", ErrServerFault, what, r.Start, r.Stop)
		}
		n += uint64(r.Stop) - uint64(r.Start) + 1
		if n > limit {
			return nil, fmt.Errorf("%w: %s: more than %d UIDs", ErrServerFault, what, limit)
		}
	}
	out := make([]imap.UID, 0, n)
	for _, r := range uids {
		for u := uint64(r.Start); u <= uint64(r.Stop); u++ {
			out = append(out, imap.UID(u))
		}
	}
	return out, nil
}

// searchUIDs is the result of a UID SEARCH in a folder of n messages.
func searchUIDs(sd *imap.SearchData, n uint32) ([]imap.UID, error) {
	return serverUIDs(sd.All, n, "UID SEARCH")
}

// numMessages is how many messages the selected folder holds, as far as
// the server said (0 with none selected).
func numMessages(c *imapclient.Client) uint32 {
	if m := c.Mailbox(); m != nil {
		return m.NumMessages
	}
	return 0
}
