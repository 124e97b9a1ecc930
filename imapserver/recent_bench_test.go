package imapserver

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// BenchmarkFetchFlags is a client's flag sync, FETCH 1:* (UID FLAGS), of
// 1,000 voicemails: in the session that holds them all as \Recent, and in
// one that holds none. \Recent must cost the second nothing.
func BenchmarkFetchFlags(b *testing.B) {
	e := newEnv(b, nil)
	first := e.deposit("1001", "+1", 10)
	ids := make([]uuid.UUID, 999)
	for i := range ids {
		ids[i] = first.ID
	}
	if _, err := e.mailbox("1001").Copy(context.Background(), ids, um.Inbox); err != nil {
		b.Fatal(err)
	}
	holder, other := e.loggedIn("alice"), e.loggedIn("alice")
	holder.cmd("s", "SELECT INBOX")
	other.cmd("s", "SELECT INBOX")
	for _, s := range []struct {
		name string
		r    *raw
	}{{"recent", holder}, {"not-recent", other}} {
		b.Run(s.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				lines := s.r.until0("f FETCH 1:* (UID FLAGS)", "f")
				if len(lines) != 1001 || !strings.HasPrefix(lines[1000], "f OK") {
					b.Fatalf("FETCH gave %d lines, last %q", len(lines), lines[len(lines)-1])
				}
			}
		})
	}
}

// BenchmarkRecentTake is SELECTs taking \Recent at once in many
// sessions, as the one lock of the server's record sees them; it reports
// the record's heap per folder for 100,000 folders.
func BenchmarkRecentTake(b *testing.B) {
	var tab recentTable
	b.RunParallel(func(pb *testing.PB) {
		var u um.UID
		for pb.Next() {
			u++
			tab.take("1001", um.Inbox, 1, u)
		}
	})
	b.StopTimer()
	const folders = 100_000
	names := make([]string, folders)
	for i := range names {
		names[i] = strconv.Itoa(i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var big recentTable
	for _, n := range names {
		big.take(n, um.Inbox, 1, 10)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/folders, "bytes/folder")
	runtime.KeepAlive(&big)
	runtime.KeepAlive(names) // held throughout, so only the record is counted
}
