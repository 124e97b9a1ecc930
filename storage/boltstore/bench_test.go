package boltstore

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/wav"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// wav30s is the size of a 30-second message: 8 kHz 16-bit mono PCM.
const wav30s = 44 + 2*30*wav.Rate

// BenchmarkDeposit compares a durable Append of a 30-second message with
// the least a durable write of the same bytes costs: a new plain file,
// written and fsynced ("file"), and the same plus the fsync of its
// directory that makes the new name durable ("file+dir"). "seq" is one
// depositor; "par" is 8, as when several calls end at once. "email2k" is
// an Append of a 2 KB e-mail, as an IMAP client's.
func BenchmarkDeposit(b *testing.B) {
	audio := wav.Tone(30 * time.Second)
	for _, par := range []int{1, 8} {
		name := "seq"
		if par > 1 {
			name = fmt.Sprintf("par%d", par)
		}
		b.Run("store/"+name, func(b *testing.B) {
			s := openStore(b)
			if err := s.CreateMailbox(ctx, "1001"); err != nil {
				b.Fatal(err)
			}
			run(b, par, wav30s, func(int64) {
				if _, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox, AudioType: "audio/wav",
					CallerNumber: "+4930123456", Duration: 30 * time.Second}, bytes.NewReader(audio)); err != nil {
					b.Fatal(err)
				}
			})
		})
		// An e-mail of 2 KB as a mail client appends it: small enough to be
		// kept in the database (inlineMax).
		b.Run("email2k/"+name, func(b *testing.B) {
			s := openStore(b)
			if err := s.CreateMailbox(ctx, "1001"); err != nil {
				b.Fatal(err)
			}
			mail := bytes.Repeat([]byte("Subject: x\r\n\r\n0123456789abcdef\r\n"), 2048/32)
			run(b, par, wav30s, func(int64) {
				if _, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox, Raw: true},
					bytes.NewReader(mail)); err != nil {
					b.Fatal(err)
				}
			})
			b.SetBytes(int64(len(mail)))
		})
		for _, dirSync := range []bool{false, true} {
			label := "file/"
			if dirSync {
				label = "file+dir/"
			}
			b.Run(label+name, func(b *testing.B) {
				dir := b.TempDir()
				run(b, par, wav30s, plainFiles(b, dir, audio, dirSync))
			})
		}
	}
}

// plainFiles returns the least a durable write of content costs, the
// deposit goal's baseline: call i creates file i in dir, writes content,
// fsyncs and closes it, and with dirSync fsyncs dir, as a new file needs
// before its name survives a crash.
func plainFiles(b *testing.B, dir string, content []byte, dirSync bool) func(i int64) {
	return func(i int64) {
		f, err := os.Create(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Write(content); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
		if dirSync {
			if err := syncDir(dir); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// run calls fn b.N times from par goroutines, with distinct arguments;
// each call counts size bytes.
func run(b *testing.B, par int, size int64, fn func(i int64)) {
	b.SetBytes(size)
	b.ResetTimer()
	start := time.Now()
	if par == 1 {
		for i := 0; i < b.N; i++ {
			fn(int64(i))
		}
	} else {
		var n atomic.Int64
		b.SetParallelism((par + 1) / 2) // times GOMAXPROCS, 2 here
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				fn(n.Add(1))
			}
		})
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// seedMessages adds n messages to folder in one transaction, with no content
// files: enough for List, which reads no content.
func seedMessages(b testing.TB, s *Store, mailbox, folder string, n int) {
	b.Helper()
	err := s.update(ctx, func(tx *bolt.Tx) error {
		mb, err := getMailbox(tx, mailbox)
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			r := &record{m: um.Message{ID: uuid.New(), CallerNumber: "+4930123456", CallerName: "Erika Mustermann",
				Time: time.Now(), Added: time.Now(), Duration: 30 * time.Second, AudioType: "audio/wav", Size: wav30s,
				Flags: um.FlagHeard, Keywords: []string{"$Label1"}}}
			if _, err := mb.add(folder, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkList lists a folder of 10,000 messages.
func BenchmarkList(b *testing.B) {
	s := openStore(b)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		b.Fatal(err)
	}
	seedMessages(b, s, "1001", um.Inbox, 10000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msgs, err := s.List(ctx, "1001", um.Inbox)
		if err != nil || len(msgs) != 10000 {
			b.Fatalf("List() = %d messages, %v", len(msgs), err)
		}
	}
}

// BenchmarkStartup opens a store of 100 and of 10,000 mailboxes and starts
// a um.Service on it; the time must not grow with the mailboxes.
func BenchmarkStartup(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprintf("mailboxes=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			s, err := Open(dir, nil)
			if err != nil {
				b.Fatal(err)
			}
			const batch = 1000
			for i := 0; i < n; i += batch {
				err := s.update(ctx, func(tx *bolt.Tx) error {
					for j := i; j < min(i+batch, n); j++ {
						if err := createMailbox(tx, fmt.Sprintf("%05d", 10000+j)); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			seedMessages(b, s, "10000", um.Inbox, 10)
			s.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s, err := Open(dir, nil)
				if err != nil {
					b.Fatal(err)
				}
				svc, err := um.New(s, nil)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				svc.Close()
				s.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDepositRatio measures store and plain-file deposits of 30-second
// messages in alternating rounds of 16, so that all see the same disk (on a
// shared disk the speed drifts too much between separate benchmarks), and
// reports ratio = store throughput / plain-file throughput. The plain files
// are written and fsynced, as in BenchmarkDeposit's "file"; ratio-dir
// compares with "file+dir", which also fsyncs the directory, as a new file
// needs before its name survives a crash. The three kinds take turns at
// going first. One op is one deposit of each kind.
func BenchmarkDepositRatio(b *testing.B) {
	audio := wav.Tone(30 * time.Second)
	for _, par := range []int{1, 8} {
		b.Run(fmt.Sprintf("par%d", par), func(b *testing.B) {
			s := openStore(b)
			if err := s.CreateMailbox(ctx, "1001"); err != nil {
				b.Fatal(err)
			}
			dir := b.TempDir()
			store := func(int64) {
				if _, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox, AudioType: "audio/wav"}, bytes.NewReader(audio)); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(3 * wav30s)
			t := inRounds(b, par, store, plainFiles(b, dir, audio, false), plainFiles(b, dir, audio, true))
			tStore, tFile, tDir := t[0].Seconds(), t[1].Seconds(), t[2].Seconds()
			b.ReportMetric(float64(b.N)/tStore, "store-msgs/s")
			b.ReportMetric(float64(b.N)/tFile, "file-msgs/s")
			b.ReportMetric(float64(b.N)/tDir, "filedir-msgs/s")
			b.ReportMetric(tFile/tStore, "ratio")
			b.ReportMetric(tDir/tStore, "ratio-dir")
		})
	}
}

// inRounds calls each of kinds b.N times from par goroutines, in
// alternating rounds of 16 calls that rotate which kind goes first, so that
// all see the same moments of a shared disk, and returns the time each
// kind took. Each call gets a distinct argument.
func inRounds(b *testing.B, par int, kinds ...func(int64)) []time.Duration {
	var next atomic.Int64
	round := func(fn func(int64), n int) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		var left atomic.Int64
		left.Store(int64(n))
		for g := 0; g < par; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for left.Add(-1) >= 0 {
					fn(next.Add(1))
				}
			}()
		}
		wg.Wait()
		return time.Since(start)
	}
	t := make([]time.Duration, len(kinds))
	b.ResetTimer()
	for done := 0; done < b.N; done += 16 {
		n := min(16, b.N-done)
		for j := range kinds {
			k := (j + done/16) % len(kinds)
			t[k] += round(kinds[k], n)
		}
	}
	return t
}

// BenchmarkSetFlags changes \Seen on one message at a time in a store of
// 100 mailboxes of 200 e-mails, as IMAP clients' STOREs do. "wait" callers
// wait for each change to be durable; "pipelined" ones bring a
// um.Durability and wait once per 10 changes, as a connection does for a
// client's pipelined commands. "par8" is eight callers at once, each on its
// own mailboxes.
func BenchmarkSetFlags(b *testing.B) {
	for _, tc := range []struct {
		name      string
		par       int
		pipelined bool
	}{{"wait/seq", 1, false}, {"wait/par8", 8, false}, {"pipelined/seq", 1, true}, {"pipelined/par8", 8, true}} {
		b.Run(tc.name, func(b *testing.B) {
			s := openStore(b)
			mail := bytes.Repeat([]byte("Subject: x\r\n\r\n0123456789abcdef\r\n"), 2048/32)
			ids := make([][]uuid.UUID, 100)
			for m := range ids {
				box := fmt.Sprint(1000 + m)
				if err := s.CreateMailbox(ctx, box); err != nil {
					b.Fatal(err)
				}
				for range 200 {
					msg, err := s.Append(ctx, box, um.Message{ID: uuid.New(), Folder: um.Inbox, Raw: true}, bytes.NewReader(mail))
					if err != nil {
						b.Fatal(err)
					}
					ids[m] = append(ids[m], msg.ID)
				}
			}
			var ds [100]um.Durability // one per mailbox: a connection's
			run(b, tc.par, 0, func(i int64) {
				m := int(i % 100)
				op := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard}
				if (i/100)%2 == 1 {
					op.Mode = um.FlagsRemove
				}
				c := ctx
				if tc.pipelined {
					c = um.WithDurability(ctx, &ds[m])
				}
				id := ids[m][int(i/200)%200]
				if _, err := s.SetFlags(c, fmt.Sprint(1000+m), []uuid.UUID{id}, op); err != nil {
					b.Fatal(err)
				}
				if tc.pipelined && (i/100)%10 == 9 {
					if err := ds[m].Wait(ctx); err != nil {
						b.Fatal(err)
					}
				}
			})
			for m := range ds {
				if err := ds[m].Wait(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
