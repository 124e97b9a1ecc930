package forward_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/forward"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/upstream"
)

// A PBX forwards a mailbox's voicemail to the user's e-mail address. The
// mailbox then cannot also sync to a mail account: a mailbox delivers to
// mail clients one way. Nothing is deposited here, so nothing is sent.
func Example() {
	ctx := context.Background()
	svc, err := um.New(memstore.New(), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	if _, err := svc.CreateMailbox(ctx, "1001"); err != nil {
		log.Fatal(err)
	}

	// The PBX's submission account: STARTTLS on port 587, then AUTH PLAIN.
	fwd, err := forward.New(svc, forward.Options{
		Addr:     "smtp.example.com:587",
		Username: "pbx@example.com",
		Password: "secret",
		From:     "voicemail@pbx.example.com",
		Render:   um.RenderOptions{Domain: "pbx.example.com"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer fwd.Close()

	// Voicemail deposited in 1001 from now on goes to Bob, and is marked
	// heard once the server has accepted it, so the lamp goes off.
	err = fwd.Add(ctx, forward.Config{
		Mailbox:   "1001",
		To:        `"Bob" <bob@example.com>`,
		MarkHeard: true,
	})
	if err != nil {
		log.Fatal(err)
	}
	st := fwd.Status("1001")
	fmt.Println("forwarded:", st.Configured, "sent:", st.Sent)

	// Syncing 1001 into Bob's IMAP account as well is refused.
	dir, err := os.MkdirTemp("", "upstream")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	state, err := upstream.NewFileState(dir)
	if err != nil {
		log.Fatal(err)
	}
	eng, err := upstream.New(svc, state, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer eng.Close()
	err = eng.Add(ctx, upstream.Config{
		Mailbox:     "1001",
		Addr:        "imap.example.com:993",
		Username:    "bob@example.com",
		Credentials: upstream.Password("secret"),
	})
	fmt.Println("sync refused:", errors.Is(err, um.ErrModeConflict))

	// To switch, stop forwarding first; Remove releases the mode.
	if err := fwd.Remove("1001"); err != nil {
		log.Fatal(err)
	}
	fmt.Println("forwarded:", fwd.Status("1001").Configured)
	// Output:
	// forwarded: true sent: 0
	// sync refused: true
	// forwarded: false
}

// Nodes of a cluster that share one store all configure forwarding of a
// mailbox; one at a time (the holder of the mailbox's lease) sends, and
// each node's Status names it. Here the cluster is one node.
func ExampleForwarder_Status() {
	ctx := context.Background()
	svc, err := um.New(memstore.New(), &um.Options{Node: "pbx1"})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	if _, err := svc.CreateMailbox(ctx, "1001"); err != nil {
		log.Fatal(err)
	}
	fwd, err := forward.New(svc, forward.Options{
		Addr: "smtp.example.com:587", From: "voicemail@pbx.example.com",
		// How long the other nodes wait for a dead owner's lease to run out.
		LeaseTTL: 10 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer fwd.Close()
	if err := fwd.Add(ctx, forward.Config{Mailbox: "1001", To: "bob@example.com"}); err != nil {
		log.Fatal(err)
	}
	// The lease is taken in the background.
	for deadline := time.Now().Add(10 * time.Second); !fwd.Status("1001").Owned && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	st := fwd.Status("1001")
	fmt.Println("owner:", st.Owner, "this node:", st.Owned)
	// Output:
	// owner: pbx1 this node: true
}
