package pgstore_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/pgstore"
	"github.com/embeddedum/um/storage/storetest"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// TestMigratesToModSeqs opens a database of schema 1, which had no ModSeqs
// and no subscriptions, and checks that its messages and folders then have
// ModSeq 1, that INBOX and Trash are subscribed, and that a change after
// the migration gets a larger ModSeq.
func TestMigratesToModSeqs(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	v1, err := os.ReadFile("migrations/0001_init.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		string(v1),
		`CREATE TABLE um_schema_version (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
		`INSERT INTO um_schema_version (version, name) VALUES (1, '0001_init.sql')`,
		`INSERT INTO um_mailboxes (name) VALUES ('1001')`,
		`INSERT INTO um_folders (mailbox_id, name, uidnext) SELECT id, f, 2 FROM um_mailboxes, unnest(ARRAY['INBOX', 'Trash']) AS f`,
		`INSERT INTO um_messages (mailbox_id, id, folder_id, uid, size)
			SELECT f.mailbox_id, gen_random_uuid(), f.id, 1, 0 FROM um_folders f WHERE f.name = 'INBOX'`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("set up schema 1: %v", err)
		}
	}
	conn.Close(ctx)

	s := openStore(t, dsn, nil)
	fs, err := s.Folders(ctx, "1001")
	if err != nil {
		t.Fatalf("Folders() after migration = %v", err)
	}
	for _, f := range fs {
		if f.HighestModSeq != 1 {
			t.Errorf("folder %s after migration: HighestModSeq = %d, want 1", f.Name, f.HighestModSeq)
		}
	}
	list, err := s.List(ctx, "1001", um.Inbox)
	if err != nil || len(list) != 1 || list[0].ModSeq != 1 {
		t.Fatalf("List() after migration = %+v, %v; want one message of ModSeq 1", list, err)
	}
	if subs, err := s.SubscribedFolders(ctx, "1001"); err != nil || fmt.Sprint(subs) != "[INBOX Trash]" {
		t.Errorf("SubscribedFolders() after migration = %v, %v; want [INBOX Trash]", subs, err)
	}
	moved, err := s.Move(ctx, "1001", []uuid.UUID{list[0].ID}, um.Trash, time.Now())
	if err != nil || moved[0].ModSeq <= 1 {
		t.Fatalf("Move() after migration = %+v, %v; want ModSeq over 1", moved, err)
	}
	if uids, _, err := s.Vanished(ctx, "1001", um.Inbox, 1); err != nil || fmt.Sprint(uids) != "[1]" {
		t.Errorf("Vanished(INBOX, 1) after migration = %v, %v; want [1]", uids, err)
	}
}

func TestVanishedForgets(t *testing.T) {
	storetest.VanishedForgets(t, openStore(t, newDatabase(t), &pgstore.Options{VanishedKept: 20}), 20)
}
