package imapserver

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// BenchmarkFetchAppended is the FETCH part of imaptest's stress run on a
// folder of appended e-mail (25 short e-mails, 5 voicemails of 300 KB
// appended as e-mail): SELECT, FETCH 1:* (UID ENVELOPE BODYSTRUCTURE
// BODY.PEEK[HEADER.FIELDS (From Subject)]), then BODY.PEEK[1] and
// BODY.PEEK[2.MIME] of every message. Each SELECT makes a new view, so what
// is not in the server's render cache is read and parsed again; "nocache"
// disables the cache, so every message is.
func BenchmarkFetchAppended(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache int
	}{{"cache", 0}, {"nocache", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnv(b, func(o *Options) { o.RenderCacheBytes = bc.cache })
			ctx := context.Background()
			mb := e.mailbox("1001")
			if _, err := mb.CreateFolder(ctx, "stress"); err != nil {
				b.Fatal(err)
			}
			for i := range 30 {
				var msg bytes.Buffer
				if i%6 == 5 {
					m := um.Message{ID: uuid.New(), Folder: um.Inbox, UID: 1, CallerNumber: fmt.Sprintf("+4930%07d", i),
						Time: time.Date(2025, 3, 3, 10, i, 0, 0, time.UTC), Duration: 9 * time.Second, AudioType: "audio/wav", Size: 300 << 10}
					if _, err := um.RenderEmail(m, um.RenderOptions{}).WriteTo(&msg, bytes.NewReader(make([]byte, 300<<10))); err != nil {
						b.Fatal(err)
					}
				} else {
					fmt.Fprintf(&msg, "From: Colleague <c%d@example.com>\r\nSubject: Notes %d\r\nMessage-ID: <s-%d@example.com>\r\n\r\n", i, i, i)
					for l := range 20 {
						fmt.Fprintf(&msg, "Line %02d: the quick brown fox jumps over the lazy dog.\r\n", l)
					}
				}
				if _, err := mb.Append(ctx, "stress", um.Message{}, &msg); err != nil {
					b.Fatal(err)
				}
			}
			c := e.dial("alice", nil)
			all := imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}
			list := &imap.FetchOptions{UID: true, Envelope: true, BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
				BodySection: []*imap.FetchItemBodySection{{Specifier: imap.PartSpecifierHeader, HeaderFields: []string{"From", "Subject"}, Peek: true}}}
			bodies := &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{{Part: []int{1}, Peek: true}, {Part: []int{2}, Specifier: imap.PartSpecifierMIME, Peek: true}}}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := c.Select("stress", nil).Wait(); err != nil {
					b.Fatal(err)
				}
				for _, o := range []*imap.FetchOptions{list, bodies} {
					msgs, err := c.Fetch(all, o).Collect()
					if err != nil {
						b.Fatal(err)
					}
					if len(msgs) != 30 {
						b.Fatalf("fetched %d, want 30", len(msgs))
					}
				}
			}
		})
	}
}
