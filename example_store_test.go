package um_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
)

// countingStore is a host's wrapper that counts the messages listed. It
// embeds um.Store, so only the Store methods pass through it; its Unwrap
// lets um find the wrapped store's optional interfaces too.
type countingStore struct {
	um.Store
	listed atomic.Int64
}

func (c *countingStore) List(ctx context.Context, mailbox, folder string) ([]um.Message, error) {
	msgs, err := c.Store.List(ctx, mailbox, folder)
	c.listed.Add(int64(len(msgs)))
	return msgs, err
}

func (c *countingStore) Unwrap() um.Store { return c.Store }

// A host that wraps its store for metrics gives the wrapper an Unwrap
// method, so that the capabilities of the store inside (here its delivery
// modes, limits and atomic expunge) are not lost.
func ExampleUnwrapper() {
	store := &countingStore{Store: memstore.New()}
	_, found := um.StoreAs[um.DeliveryModes](store)
	fmt.Println("delivery modes found through the wrapper:", found)

	svc, _ := um.New(store, nil)
	defer svc.Close()
	svc.CreateMailbox(context.Background(), "1001")
	svc.ClaimDelivery("1001", "imap-sync")
	err := svc.ClaimDelivery("1001", "email-forward")
	var mc *um.ModeConflictError
	fmt.Println(errors.Is(err, um.ErrModeConflict), errors.As(err, &mc) && mc.Held == "imap-sync")
	// Output:
	// delivery modes found through the wrapper: true
	// true true
}
