package boltstore

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/storetest"
	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

// TestMigratesToModSeqs opens a database of schema 2, which had no ModSeqs
// and no subscriptions, and checks that every message and folder then has
// ModSeq 1, that INBOX and Trash are subscribed, and that changes after the
// migration get larger ModSeqs.
func TestMigratesToModSeqs(t *testing.T) {
	s := openStore(t)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateFolder(ctx, "1001", "Saved"); err != nil {
		t.Fatal(err)
	}
	m1 := appendMsg(t, s, "1001", um.Inbox, []byte("one"))
	m2 := appendMsg(t, s, "1001", "Saved", randomBytes(inlineMax+10))
	dir := s.dir
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(dir, DBFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		// Make it what schema 2 wrote: records end after their keywords,
		// the mailbox has no ModSeq keys and no subscriptions.
		b := tx.Bucket(bucketMailboxes).Bucket([]byte("1001"))
		if err := b.Delete(keyModSeq); err != nil {
			return err
		}
		for _, sub := range [][]byte{subHighest, subVanished, subSubs} {
			if err := b.DeleteBucket(sub); err != nil {
				return err
			}
		}
		return b.Bucket(subMsgs).ForEachBucket(func(k []byte) error {
			fb := b.Bucket(subMsgs).Bucket(k)
			var recs [][2][]byte
			if err := fb.ForEach(func(k, v []byte) error {
				if v[len(v)-1] >= 0x80 {
					return fmt.Errorf("ModSeq of a test record takes more than one byte")
				}
				recs = append(recs, [2][]byte{append([]byte(nil), k...), append([]byte(nil), v[:len(v)-1]...)})
				return nil
			}); err != nil {
				return err
			}
			for _, r := range recs {
				if err := fb.Put(r[0], r[1]); err != nil {
					return err
				}
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, putU32(nil, 2))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s = openAt(t, dir)
	fs, err := s.Folders(ctx, "1001")
	if err != nil {
		t.Fatalf("Folders() after migration = %v", err)
	}
	for _, f := range fs {
		if f.HighestModSeq != 1 {
			t.Errorf("folder %s after migration: HighestModSeq = %d, want 1", f.Name, f.HighestModSeq)
		}
	}
	for _, m := range []um.Message{m1, m2} {
		if got, err := s.Get(ctx, "1001", m.ID); err != nil || got.ModSeq != 1 || got.UID != m.UID {
			t.Errorf("Get() after migration = ModSeq %d UID %d, %v; want ModSeq 1 UID %d", got.ModSeq, got.UID, err, m.UID)
		}
	}
	if subs, err := s.SubscribedFolders(ctx, "1001"); err != nil || fmt.Sprint(subs) != "[INBOX Trash]" {
		t.Errorf("SubscribedFolders() after migration = %v, %v; want [INBOX Trash]", subs, err)
	}
	changed, err := s.SetFlags(ctx, "1001", []uuid.UUID{m1.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagHeard})
	if err != nil || len(changed) != 1 || changed[0].ModSeq <= 1 {
		t.Fatalf("SetFlags() after migration = %+v, %v; want ModSeq over 1", changed, err)
	}
	if err := s.Remove(ctx, "1001", []uuid.UUID{m2.ID}); err != nil {
		t.Fatal(err)
	}
	if uids, _, err := s.Vanished(ctx, "1001", "Saved", 1); err != nil || len(uids) != 1 || uids[0] != m2.UID {
		t.Errorf("Vanished(Saved, 1) after migration = %v, %v; want [%d]", uids, err, m2.UID)
	}
}

func TestVanishedForgets(t *testing.T) {
	defer func(k, e int) { vanishedKept, pruneEvery = k, e }(vanishedKept, pruneEvery)
	vanishedKept, pruneEvery = 20, 8
	storetest.VanishedForgets(t, openStore(t), 20)
}
