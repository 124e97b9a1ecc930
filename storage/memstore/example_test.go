package memstore_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
)

// A host's tests run um on a memstore: nothing touches the disk, and each
// test starts empty.
func ExampleNew() {
	ctx := context.Background()
	store := memstore.New()
	defer store.Close()
	svc, err := um.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	mb, err := svc.CreateMailbox(ctx, "1001")
	if err != nil {
		log.Fatal(err)
	}
	_, err = mb.Deposit(ctx, um.Deposit{
		Audio:        bytes.NewReader(wav.Silence(time.Second)),
		CallerNumber: "+4930123456",
		Duration:     time.Second,
		Urgent:       true,
	})
	if err != nil {
		log.Fatal(err)
	}
	state, err := mb.MWI(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(state.Waiting(), state)
	// Output: true 1/0 (1/0)
}
