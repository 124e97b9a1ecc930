package boltstore

import (
	"fmt"
	"hash/crc32"
	"path/filepath"
	"testing"

	"github.com/embeddedum/um"
)

// fillStore puts n messages of size bytes into mailboxes 1001 to 1010.
func fillStore(b *testing.B, n, size int) *Store {
	b.Helper()
	s := openStore(b)
	for i := range 10 {
		newMailbox(b, s, fmt.Sprint(1001+i))
	}
	content := randomContent(b, size)
	for i := range n {
		appendMsg(b, s, fmt.Sprint(1001+i%10), um.Inbox, content)
	}
	return s
}

// BenchmarkBackup copies a store of 1,000 voicemails of 30 s (480 KB).
func BenchmarkBackup(b *testing.B) {
	s := fillStore(b, 1000, 480000)
	b.SetBytes(1000 * 480000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Backup(ctx, filepath.Join(b.TempDir(), "backup")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheck reads and verifies the same store.
func BenchmarkCheck(b *testing.B) {
	s := fillStore(b, 1000, 480000)
	b.SetBytes(1000 * 480000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rep, err := s.Check(ctx)
		if err != nil || len(rep.Problems) != 0 {
			b.Fatal(err, rep.Problems)
		}
	}
}

// BenchmarkContentSum is what the checksum adds to a deposit of 30 s of
// audio (480 KB), beside the fdatasync and the commit it waits for anyway.
func BenchmarkContentSum(b *testing.B) {
	content := randomContent(b, 480000)
	b.SetBytes(int64(len(content)))
	for i := 0; i < b.N; i++ {
		crc32.Checksum(content, castagnoli)
	}
}

// BenchmarkDepositDuringBackup measures 480 KB deposits from four callers
// with and without backups of a 200-voicemail store running back to back
// meanwhile: what a backup costs the PBX while it runs.
func BenchmarkDepositDuringBackup(b *testing.B) {
	for _, backup := range []bool{false, true} {
		b.Run(fmt.Sprintf("backup=%v", backup), func(b *testing.B) {
			s := fillStore(b, 200, 480000)
			content := randomContent(b, 480000)
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for backup {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := s.Backup(ctx, filepath.Join(b.TempDir(), "backup")); err != nil {
						b.Error(err)
						return
					}
				}
			}()
			b.SetParallelism(2) // 2 cores: four depositors
			b.SetBytes(480000)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					appendMsg(b, s, "1001", um.Inbox, content)
				}
			})
			b.StopTimer()
			close(stop)
			<-done
		})
	}
}
