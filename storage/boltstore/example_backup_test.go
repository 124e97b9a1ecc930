package boltstore_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/boltstore"
	"github.com/embeddedum/um/wav"
)

// A running PBX backs its store up without stopping, checks it, and after
// losing the disk restores the backup into a fresh directory.
func ExampleStore_Backup() {
	root, err := os.MkdirTemp("", "voicemail")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(root)
	ctx := context.Background()

	store, err := boltstore.Open(filepath.Join(root, "live"), nil)
	if err != nil {
		log.Fatal(err)
	}
	svc, err := um.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	mb, err := svc.CreateMailbox(ctx, "1001")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(5 * time.Second)), CallerNumber: "+4930123456"}); err != nil {
		log.Fatal(err)
	}

	// Deposits may go on while this runs.
	info, err := store.Backup(ctx, filepath.Join(root, "backup-1"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("backed up:", info.Messages, "messages")

	rep, err := store.Check(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		log.Fatal(err) // names each damaged message: mailbox, folder, UID, what is wrong
	}
	fmt.Println("checked:", rep.Messages, "messages,", len(rep.Problems), "problems")
	svc.Close()
	if err := store.Close(); err != nil {
		log.Fatal(err)
	}

	// Restore checks what it restored; then the PBX opens it as its store.
	rep, err = boltstore.Restore(ctx, filepath.Join(root, "backup-1"), filepath.Join(root, "restored"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("restored:", rep.Messages, "messages,", len(rep.Problems), "problems")
	// Output:
	// backed up: 1 messages
	// checked: 1 messages, 0 problems
	// restored: 1 messages, 0 problems
}
