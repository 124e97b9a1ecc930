package um_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/boltstore"
	"github.com/embeddedum/um/wav"
)

// A server that answers several requests at once (an IMAP client's
// pipelined commands) hands the store a Durability: each change returns
// once applied, and one Wait before the answers go out covers them all,
// so the changes share the store's syncs instead of waiting for one each.
func ExampleDurability() {
	dir, _ := os.MkdirTemp("", "um-example-")
	defer os.RemoveAll(dir)
	store, err := boltstore.Open(dir, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	svc, _ := um.New(store, nil)
	defer svc.Close()
	ctx := context.Background()
	mb, _ := svc.CreateMailbox(ctx, "1001")
	for range 3 {
		mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(time.Second)), Duration: time.Second})
	}
	msgs, _ := mb.List(ctx, um.Inbox)

	var d um.Durability
	dctx := um.WithDurability(ctx, &d)
	for _, m := range msgs {
		if err := mb.MarkHeard(dctx, m.ID); err != nil {
			fmt.Println(err) // not applied: nothing to wait for
		}
	}
	fmt.Println("waiting for durability:", d.Pending())
	if err := d.Wait(ctx); err != nil {
		fmt.Println("not durable, do not acknowledge:", err)
		return
	}
	fmt.Println("durable; answer now:", !d.Pending())
	// Output:
	// waiting for durability: true
	// durable; answer now: true
}
