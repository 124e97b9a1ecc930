package upstream

import (
	"cmp"
	"fmt"
	"io"
	"slices"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// fetched is what the server said of one message in answer to a UID
// FETCH.
type fetched struct {
	uid      imap.UID
	flags    um.Flags
	hasFlags bool   // the answer named its FLAGS
	header   []byte // the header field asked for (nil when not asked)
}

// fetchUIDs sends a UID FETCH of the flags of uids and, with section, one
// header field (changedSince, when not 0, is CONDSTORE's CHANGEDSINCE),
// and gathers the answer per UID: a server may split the items of one
// message over several FETCH responses, and one it sends unasked may come
// in between (UID 7 MODSEQ (9)). Messages it was not asked about are left
// out.
//
// A message the answer names without FLAGS is a server fault. Taken for
// a message without flags it would turn a heard voicemail unheard; taken
// for one not seen, it would be confirmed gone or sent for a full pass on
// an answer that says it is there. Either is a second truth about one
// copy, from an answer that left out what was asked.
//
// It reads the stream itself rather than with FetchCommand.Collect, which
// after a literal that could not be read whole (the connection broke in
// the middle) reads the literal again while the client's reader goes on
// with the connection, racing on the client's buffer: fetchUIDs stops
// there and closes the connection, whose session is over anyway (the
// session's end waits for the reader). A panic in the middle of the answer
// closes the connection too, and then reads away
// what came of the answer: go-imap's reader waits for each message it
// hands over to be read, and would wait for ever.
func (w *worker) fetchUIDs(c *imapclient.Client, uids []imap.UID, section *imap.FetchItemBodySection, changedSince uint64) ([]fetched, error) {
	set := imap.UIDSetNum(uids...)
	opts := &imap.FetchOptions{UID: true, Flags: true, ChangedSince: changedSince}
	if section != nil {
		opts.BodySection = []*imap.FetchItemBodySection{section}
	}
	w.armFetch(len(uids))
	cmd := c.Fetch(set, opts)
	defer func() {
		if r := recover(); r != nil {
			w.g.Close()
			cmd.Close()
			panic(r)
		}
	}()
	byUID := make(map[imap.UID]*fetched)
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		var uid imap.UID
		var flags []imap.Flag
		var header []byte
		hasFlags := false
		for item := msg.Next(); item != nil; item = msg.Next() {
			switch item := item.(type) {
			case imapclient.FetchItemDataUID:
				uid = item.UID
			case imapclient.FetchItemDataFlags:
				flags, hasFlags = item.Flags, true
			case imapclient.FetchItemDataBodySection:
				header = []byte{}
				if item.Literal != nil {
					b, err := io.ReadAll(item.Literal)
					if err != nil {
						w.g.Close() // the session's end waits for the reader
						return nil, fmt.Errorf("upstream: UID FETCH: %w", err)
					}
					header = b
				}
			}
		}
		if w.e.onFetched != nil {
			w.e.onFetched()
		}
		if uid == 0 || !set.Contains(uid) {
			continue
		}
		f := byUID[uid]
		if f == nil {
			f = &fetched{uid: uid}
			byUID[uid] = f
		}
		if hasFlags {
			f.flags, f.hasFlags = fromIMAP(flags), true
		}
		if header != nil && f.header == nil {
			f.header = header
		}
	}
	if err := cmd.Close(); err != nil {
		return nil, fmt.Errorf("upstream: UID FETCH: %w", err)
	}
	out := make([]fetched, 0, len(byUID))
	for _, f := range byUID {
		out = append(out, *f)
	}
	slices.SortFunc(out, func(a, b fetched) int { return cmp.Compare(a.uid, b.uid) })
	for _, f := range out {
		if !f.hasFlags {
			return nil, fmt.Errorf("%w: UID FETCH answered for UID %d without its FLAGS", ErrServerFault, f.uid)
		}
	}
	return out, nil
}
