package upstream_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/pgstore"
	"github.com/embeddedum/um/upstream"
)

// Every node of a PBX cluster runs the same code with the same mailboxes:
// the nodes share one PostgreSQL, and for each mailbox one of them (the
// holder of its lease) syncs it, continuing from the state the last owner
// left in the store. When that node dies, another takes over within about
// LeaseTTL. This example needs PostgreSQL and a mail server, so it is not
// run.
func Example_cluster() {
	ctx := context.Background()
	node, _ := os.Hostname()
	store, err := pgstore.Open(ctx, "postgres://pbx@db.example.com/voicemail", &pgstore.Options{Node: node})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	svc, err := um.New(store, &um.Options{Node: node})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()

	// No StateStore: the store keeps the state. A node that kept state
	// files before passes its FileState instead, and each file is moved
	// into the store the first time this node syncs its mailbox.
	eng, err := upstream.New(svc, nil, &upstream.Options{LeaseTTL: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer eng.Close()
	if _, err := svc.EnsureMailbox(ctx, "1001"); err != nil {
		log.Fatal(err)
	}
	err = eng.Add(ctx, upstream.Config{
		Mailbox:     "1001",
		Addr:        "mail.example.com:993",
		Username:    "alice@example.com",
		Credentials: upstream.Password("app-password"),
	})
	if err != nil {
		log.Fatal(err)
	}

	// On the status page of any node.
	st := eng.Status("1001")
	if st.Owning {
		fmt.Printf("%s: synced here, connected %v\n", st.Mailbox, st.Connected)
	} else {
		fmt.Printf("%s: synced by node %q\n", st.Mailbox, st.Owner)
	}
}
