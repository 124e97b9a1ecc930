package imapserver

import (
	"bytes"
	"encoding/base64"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

func TestFetchSectionsMatchAudio(t *testing.T) {
	e := newEnv(t, nil)
	audio := silence(5000)
	for i := range audio[44:] {
		audio[44+i] = byte(i * 7)
	}
	if _, err := e.mailbox("1001").Deposit(t.Context(), depositOf(audio, "+4930555")); err != nil {
		t.Fatal(err)
	}
	c := e.dial("alice", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	text := &imap.FetchItemBodySection{Part: []int{1}, Peek: true}
	mime := &imap.FetchItemBodySection{Part: []int{2}, Specifier: imap.PartSpecifierMIME, Peek: true}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{text, mime}}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(msgs[0].FindBodySection(text)); !strings.Contains(got, "+4930555") {
		t.Fatalf("BODY[1] = %q, want the caller's number", got)
	}
	if got := string(msgs[0].FindBodySection(mime)); !strings.Contains(got, "audio/wav") {
		t.Fatalf("BODY[2.MIME] = %q, want audio/wav", got)
	}
	if n := e.store.read.Load(); n != 0 {
		t.Fatalf("BODY[1] and BODY[2.MIME] read %d audio bytes, want 0", n)
	}

	part2 := &imap.FetchItemBodySection{Part: []int{2}, Peek: true}
	bin := &imap.FetchItemBinarySection{Part: []int{2}, Peek: true}
	binPart := &imap.FetchItemBinarySection{Part: []int{2}, Peek: true, Partial: &imap.SectionPartial{Offset: 100, Size: 50}}
	msgs, err = c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{
		BodySection:       []*imap.FetchItemBodySection{part2},
		BinarySection:     []*imap.FetchItemBinarySection{bin},
		BinarySectionSize: []*imap.FetchItemBinarySectionSize{{Part: []int{2}}},
	}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	b64 := strings.NewReplacer("\r", "", "\n", "").Replace(string(msgs[0].FindBodySection(part2)))
	dec, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || !bytes.Equal(dec, audio) {
		t.Fatalf("BODY[2] decodes to %d bytes (err %v), want the %d deposited", len(dec), err, len(audio))
	}
	if got := msgs[0].FindBinarySection(bin); !bytes.Equal(got, audio) {
		t.Fatalf("BINARY[2] = %d bytes, want the deposited audio", len(got))
	}
	if len(msgs[0].BinarySectionSize) != 1 || msgs[0].BinarySectionSize[0].Size != uint32(len(audio)) {
		t.Fatalf("BINARY.SIZE[2] = %+v, want %d", msgs[0].BinarySectionSize, len(audio))
	}
	// A partial BINARY answers with its offset (RFC 3516), which go-imap's
	// client does not read: check it on the wire.
	_ = binPart
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	r.cmd("b", "EXAMINE INBOX")
	r.send("c FETCH 1 (BINARY.PEEK[2]<100.50>)\r\n")
	if l := r.line(); !strings.HasSuffix(l, "BINARY[2]<100> ~{50}") {
		t.Fatalf("partial BINARY response = %q, want BINARY[2]<100> ~{50}", l)
	}
	got := make([]byte, 50)
	if _, err := io.ReadFull(r.br, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, audio[100:150]) {
		t.Fatalf("BINARY[2]<100.50> = %.20x, want %.20x", got, audio[100:150])
	}
	r.until("c")
	// Peeks left the message unheard.
	if e.list("1001", "INBOX")[0].Heard() {
		t.Fatal("PEEK fetches marked the message heard")
	}
}

func TestSearch(t *testing.T) {
	e := newEnv(t, nil)
	e.deposit("1001", "+111", 10)
	m2 := e.deposit("1001", "+222", 10)
	e.deposit("1001", "+333", 10)
	if err := e.mailbox("1001").MarkHeard(t.Context(), m2.ID); err != nil {
		t.Fatal(err)
	}
	c := e.dial("alice", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	res, err := c.Search(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := res.AllSeqNums(); len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Fatalf("SEARCH UNSEEN = %v, want [1 3]", got)
	}
	res, err = c.UIDSearch(&imap.SearchCriteria{Text: []string{"+222"}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if got := res.AllUIDs(); len(got) != 1 || got[0] != imap.UID(m2.UID) {
		t.Fatalf("UID SEARCH TEXT +222 = %v, want [%d]", got, m2.UID)
	}
	res, err = c.Search(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Message-Context", Value: "voice"}}}, &imap.SearchOptions{ReturnCount: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if res.Count != 3 {
		t.Fatalf("SEARCH RETURN (COUNT) HEADER Message-Context voice = %d, want 3", res.Count)
	}
	if n := e.store.read.Load(); n != 0 {
		t.Fatalf("SEARCH read %d audio bytes, want 0", n)
	}
}

// TestFetchFlagsRendersNothing: a client syncing flags (FETCH 1:* (UID
// FLAGS INTERNALDATE)) gets its answer from the view; no message is
// rendered. RFC822.SIZE then renders each message once.
func TestFetchFlagsRendersNothing(t *testing.T) {
	e := newEnv(t, nil)
	for _, n := range []string{"+1", "+2", "+3"} {
		e.deposit("1001", n, 10)
	}
	c := e.dial("alice", nil)
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	all := imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}
	msgs, err := c.Fetch(all, &imap.FetchOptions{UID: true, Flags: true, InternalDate: true}).Collect()
	if err != nil || len(msgs) != 3 || msgs[2].UID != 3 || msgs[2].InternalDate.IsZero() {
		t.Fatalf("FETCH 1:* (UID FLAGS INTERNALDATE) = %d messages, %v", len(msgs), err)
	}
	if n, _ := e.srv.cache.stats(); n != 0 {
		t.Fatalf("after a FLAGS fetch the render cache holds %d, want 0", n)
	}
	if _, err := c.Fetch(all, &imap.FetchOptions{RFC822Size: true}).Collect(); err != nil {
		t.Fatal(err)
	}
	if n, _ := e.srv.cache.stats(); n != 3 {
		t.Fatalf("after an RFC822.SIZE fetch the render cache holds %d, want 3", n)
	}
}

// TestRepeatedRangesTakeEachMessageOnce: a set that names every message
// thousands of times (1:*,1:*,... up to the command size limit) is answered
// with each message once, and costs the server about what naming them once
// does: the ranges are merged before messages are taken, so memory does
// not grow with ranges times messages (343 MiB for this command when it
// did).
func TestRepeatedRangesTakeEachMessageOnce(t *testing.T) {
	e := newEnv(t, nil)
	const n = 300
	for range n {
		e.deposit("1001", "+111", 10)
	}
	r := dialRaw(t, e.tlsAddr, e.clientTLS)
	r.cmd("a", "LOGIN alice alice-pw")
	r.cmd("b", "EXAMINE INBOX")
	ranges := strings.TrimSuffix(strings.Repeat("1:*,", (maxCommandBytes-100)/4), ",")
	for _, cmd := range []string{"FETCH", "UID FETCH"} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		lines := r.until0("c "+cmd+" "+ranges+" (FLAGS)", "c")
		runtime.ReadMemStats(&after)
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "c OK") {
			t.Fatalf("%s of %d ranges: %q, want OK", cmd, strings.Count(ranges, ",")+1, last)
		}
		seen := map[string]bool{}
		for _, l := range lines[:len(lines)-1] {
			seq, _, ok := strings.Cut(strings.TrimPrefix(l, "* "), " FETCH ")
			if !ok || seen[seq] {
				t.Fatalf("%s: line %q, want one FETCH per message", cmd, l)
			}
			seen[seq] = true
		}
		if len(seen) != n {
			t.Errorf("%s answered %d messages, want each of the %d once", cmd, len(seen), n)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
			t.Errorf("%s of repeated ranges allocated %d MiB, want it bounded by the messages (under 32 MiB)", cmd, alloc>>20)
		}
	}
}
