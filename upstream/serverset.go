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

// folderMark is the selected folder's size as the server last said it,
// and the count of its EXPUNGE responses then, taken before a search is
// sent.
type folderMark struct {
	size     uint32
	expunges int64
}

func (w *worker) markFolder(c *imapclient.Client) folderMark {
	m := folderMark{expunges: w.expunges.Load()}
	if mb := c.Mailbox(); mb != nil {
		m.size = mb.NumMessages
	}
	return m
}

// matchable is the most messages a search sent at m can have matched in
// a folder the server last said holds size: size plus the EXPUNGE
// responses since m, which may follow a result that still counted their
// messages (Dovecot expunges between a UID SEARCH's result and its OK).
func (w *worker) matchable(m folderMark, size uint32) uint32 {
	gone := max(w.expunges.Load()-m.expunges, 0)
	return uint32(min(int64(size)+gone, math.MaxUint32))
}

// search sends a UID SEARCH in the selected folder and returns the UIDs
// it found.
func (w *worker) search(c *imapclient.Client, crit *imap.SearchCriteria) ([]imap.UID, error) {
	m := w.markFolder(c)
	w.arm()
	sd, err := c.UIDSearch(crit, nil).Wait()
	if err != nil {
		return nil, fmt.Errorf("upstream: UID SEARCH: %w", err)
	}
	size := max(m.size, w.markFolder(c).size) // EXISTS may come with the result
	return serverUIDs(sd.All, w.matchable(m, size), "UID SEARCH")
}
