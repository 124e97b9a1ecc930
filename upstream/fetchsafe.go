package upstream

import (
	"io"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// fetchHeaders fetches the UID, flags and section (a header, a literal) of
// uids. It does what FetchCommand.Collect does, except after a literal
// that could not be read whole (the connection broke in the middle):
// Collect then reads the literal again while the client's reader goes on
// with the connection, which races on the client's buffer. fetchHeaders
// stops there and closes the client, whose session is over anyway.
func fetchHeaders(c *imapclient.Client, uids []imap.UID, section *imap.FetchItemBodySection) ([]*imapclient.FetchMessageBuffer, error) {
	cmd := c.Fetch(imap.UIDSetNum(uids...), &imap.FetchOptions{UID: true, Flags: true, BodySection: []*imap.FetchItemBodySection{section}})
	var out []*imapclient.FetchMessageBuffer
	for msg := cmd.Next(); msg != nil; msg = cmd.Next() {
		buf := &imapclient.FetchMessageBuffer{SeqNum: msg.SeqNum}
		for item := msg.Next(); item != nil; item = msg.Next() {
			switch item := item.(type) {
			case imapclient.FetchItemDataUID:
				buf.UID = item.UID
			case imapclient.FetchItemDataFlags:
				buf.Flags = item.Flags
			case imapclient.FetchItemDataBodySection:
				var b []byte
				if item.Literal != nil {
					var err error
					if b, err = io.ReadAll(item.Literal); err != nil {
						c.Close()
						return out, err
					}
				}
				buf.BodySection = append(buf.BodySection, imapclient.FetchBodySectionBuffer{Section: item.Section, Bytes: b})
			}
		}
		out = append(out, buf)
	}
	return out, cmd.Close()
}
