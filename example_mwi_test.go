package um_test

import (
	"bytes"
	"fmt"
	"log"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
)

// A PBX node that starts announces every mailbox's lamp once, since phones
// may have missed changes while it was down. MWIState.Node tells where a
// change was made: a host that wants each change announced by one node of a
// cluster only skips the states of other nodes.
func ExampleOptions_announceMWI() {
	store := memstore.New()
	// What an earlier run left in the store.
	before, err := um.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, name := range []string{"1001", "1002"} {
		if _, err := before.CreateMailbox(ctx, name); err != nil {
			log.Fatal(err)
		}
	}
	mb, _ := before.Mailbox(ctx, "1001")
	if _, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(time.Second))}); err != nil {
		log.Fatal(err)
	}
	before.Close()

	svc, err := um.New(store, &um.Options{
		Node:        "pbx-a",
		AnnounceMWI: true,
		MWIWorkers:  1, // one call at a time, so the output's order is fixed
		MWI: func(s um.MWIState) {
			if s.Node != "pbx-a" {
				return // a change made on another node, announced there
			}
			fmt.Println("NOTIFY", s.Mailbox, s.Waiting(), s)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	svc.FlushMWI()
	// Output:
	// NOTIFY 1001 true 1/0 (0/0)
	// NOTIFY 1002 false 0/0 (0/0)
}
