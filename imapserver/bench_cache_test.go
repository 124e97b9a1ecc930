package imapserver

import (
	"fmt"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// BenchmarkSelectFetchEnvelopes is the header part of a mail client's
// session, as the load tool (bench/imapload) runs it: SELECT INBOX of 25
// voicemails, then FETCH 1:* (UID ENVELOPE FLAGS RFC822.SIZE). Each SELECT
// makes a new view, so every iteration renders and parses the messages
// again unless the server keeps them.
func BenchmarkSelectFetchEnvelopes(b *testing.B) {
	e := newEnv(b, nil)
	for i := 0; i < 25; i++ {
		e.deposit("1001", fmt.Sprintf("+49301234%04d", i), 1000)
	}
	c := e.dial("alice", nil)
	all := imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}
	opts := &imap.FetchOptions{UID: true, Envelope: true, Flags: true, RFC822Size: true}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			b.Fatal(err)
		}
		msgs, err := c.Fetch(all, opts).Collect()
		if err != nil {
			b.Fatal(err)
		}
		if len(msgs) != 25 {
			b.Fatalf("fetched %d, want 25", len(msgs))
		}
	}
}
