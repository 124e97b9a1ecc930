package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/pgstore"
)

// Two PBX nodes share the voice mailboxes in one database. Each node opens a
// Store of its own and runs a Service on it, under the same node name in
// both Options. This example needs a PostgreSQL server, so it is not run.
func ExampleOpen() {
	ctx := context.Background()
	const dsn = "postgres://um@db.example.com/voicemail"
	notify := func(s um.MWIState) {
		// Send the SIP NOTIFY for s.Mailbox here.
		log.Printf("lamp %s: %s", s.Mailbox, s)
	}

	// On node pbx-a.
	storeA, err := pgstore.Open(ctx, dsn, &pgstore.Options{Node: "pbx-a"})
	if err != nil {
		log.Fatal(err)
	}
	defer storeA.Close()
	svcA, err := um.New(storeA, &um.Options{Node: "pbx-a", MWI: notify})
	if err != nil {
		log.Fatal(err)
	}
	defer svcA.Close()

	// On node pbx-b, usually another machine.
	storeB, err := pgstore.Open(ctx, dsn, &pgstore.Options{Node: "pbx-b"})
	if err != nil {
		log.Fatal(err)
	}
	defer storeB.Close()
	svcB, err := um.New(storeB, &um.Options{Node: "pbx-b", MWI: notify})
	if err != nil {
		log.Fatal(err)
	}
	defer svcB.Close()

	// The IMAP sessions and sync workers of node B subscribe there...
	sub := svcB.Subscribe("1001", um.SubscribeOptions{})
	defer sub.Close()

	// ...and hear of a deposit taken on node A, whose hook lights the lamp.
	mb, err := svcA.EnsureMailbox(ctx, "1001")
	if err != nil {
		log.Fatal(err)
	}
	audio, err := os.Open("/var/spool/pbx/recording.wav")
	if err != nil {
		log.Fatal(err)
	}
	defer audio.Close()
	_, err = mb.Deposit(ctx, um.Deposit{Audio: audio, CallerNumber: "+4930123456", Duration: 12 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	for range sub.C() {
		changes, err := sub.Next()
		if errors.Is(err, um.ErrOverflow) {
			// Changes were dropped: a subscriber reloads what it holds.
			continue
		}
		for _, c := range changes {
			for _, e := range c.Events {
				if e.Kind == um.EventAdded {
					fmt.Println("from", c.Node, "in", e.Folder, "UID", e.Message.UID)
					return
				}
			}
		}
	}
}
