package imapserver

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
	"github.com/google/uuid"
)

// TestRawCharge lays out appended e-mails, short ones and voicemails
// appended as e-mail, in the render cache, and builds their ENVELOPE, and
// it renders voicemails with their ENVELOPE and BODYSTRUCTURE: what the
// cache charges for them, which its bound counts, is at least the heap
// they take, and not so far above it that the bound keeps far fewer than
// it could.
func TestRawCharge(t *testing.T) {
	for _, kind := range []string{"e-mail", "voicemail appended", "voicemail"} {
		t.Run(kind, func(t *testing.T) {
			const n = 1000
			c := newRenderCache(1 << 40)
			msgs := make([]um.Message, n)
			bodies := make([][]byte, n)
			for i := range msgs {
				if kind == "voicemail" {
					msgs[i] = testMessage(i)
					continue
				}
				if kind == "voicemail appended" {
					vm := testMessage(i)
					var buf bytes.Buffer
					um.RenderEmail(vm, um.RenderOptions{Mailbox: "user1"}).WriteTo(&buf, bytes.NewReader(make([]byte, vm.Size)))
					bodies[i] = buf.Bytes()
				} else {
					bodies[i] = fmt.Appendf(nil, "Date: Mon, 3 Mar 2025 10:%02d:00 +0000\r\nFrom: Colleague <colleague%d@example.com>\r\n"+
						"Subject: Notes %d\r\nMessage-ID: <stress-%d@example.com>\r\nMIME-Version: 1.0\r\n"+
						"Content-Type: text/plain; charset=us-ascii\r\n\r\nLine 01: the quick brown fox\r\n", i%60, i, i, i)
				}
				msgs[i] = um.Message{ID: uuid.New(), Raw: true, Size: int64(len(bodies[i])), Folder: "stress", UID: um.UID(i + 1)}
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for i := range msgs {
				r := c.get(&msgs[i], "user1", um.RenderOptions{})
				if kind == "voicemail" {
					c.envelope(r, func() ([]byte, error) { return r.email.Header(), nil })
					c.bodyStructure(r, true, func() (imap.BodyStructure, error) { return partStructure(r.email.Structure()), nil })
					continue
				}
				b := bodies[i]
				if _, err := c.layout(r, func() (*entity, []byte, error) {
					root, _, err := scanEntity(bytes.NewReader(b))
					return root, nil, err
				}); err != nil {
					t.Fatal(err)
				}
				if _, err := c.envelope(r, func() ([]byte, error) { return r.head, nil }); err != nil {
					t.Fatal(err)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(bodies)
			heap := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / n
			_, used := c.stats()
			charged := used / n
			t.Logf("%s: %d bytes of heap per message, %d charged", kind, heap, charged)
			if charged < heap || charged > 3*heap {
				t.Errorf("%s: the cache charges %d bytes per laid-out message, the heap holds %d: want at least that, at most 3 times", kind, charged, heap)
			}
		})
	}
}
