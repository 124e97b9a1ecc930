package boltstore_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/boltstore"
	"github.com/embeddedum/um/wav"
)

// A PBX opens its store at start-up and keeps it open while it runs. What
// the store holds survives a restart with the same UIDs and UIDVALIDITY,
// so mail clients do not download everything again.
func ExampleOpen() {
	// A PBX uses a fixed directory such as /var/lib/pbx/voicemail.
	dir, err := os.MkdirTemp("", "voicemail")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()

	store, err := boltstore.Open(dir, nil)
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
	_, err = mb.Deposit(ctx, um.Deposit{
		Audio:        bytes.NewReader(wav.Silence(3 * time.Second)),
		CallerNumber: "+4930123456",
		Duration:     3 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	before, err := mb.Folder(ctx, um.Inbox)
	if err != nil {
		log.Fatal(err)
	}
	// The service first, then the store it runs on.
	svc.Close()
	if err := store.Close(); err != nil {
		log.Fatal(err)
	}

	// After the restart.
	store, err = boltstore.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	svc, err = um.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	mb, err = svc.Mailbox(ctx, "1001")
	if err != nil {
		log.Fatal(err)
	}
	msgs, err := mb.List(ctx, um.Inbox)
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range msgs {
		fmt.Println(m.UID, m.CallerNumber, m.Duration)
	}
	after, err := mb.Folder(ctx, um.Inbox)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("same UIDVALIDITY:", after.UIDValidity == before.UIDValidity)
	// Output:
	// 1 +4930123456 3s
	// same UIDVALIDITY: true
}
