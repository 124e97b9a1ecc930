package upstream_test

import (
	"context"
	"fmt"
	"log"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/boltstore"
	"github.com/embeddedum/um/upstream"
)

// A PBX syncs a voice mailbox into its user's account on the company mail
// server, and shows on its status page how the sync fares. This example
// needs a mail server, so it is not run.
func Example() {
	ctx := context.Background()
	store, err := boltstore.Open("/var/lib/pbx/voicemail", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	svc, err := um.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	if _, err := svc.EnsureMailbox(ctx, "1001"); err != nil {
		log.Fatal(err)
	}

	// The engine remembers which upstream UID holds which voicemail; the
	// store keeps that state (boltstore implements um.OutwardState), so no
	// StateStore is needed.
	eng, err := upstream.New(svc, nil, &upstream.Options{Logf: log.Printf})
	if err != nil {
		log.Fatal(err)
	}
	defer eng.Close()

	// Alice's voicemail goes to the INBOX of her account, over implicit
	// TLS, with a password. Add returns at once; the worker connects in the
	// background and retries until the server answers.
	err = eng.Add(ctx, upstream.Config{
		Mailbox:     "1001",
		Addr:        "mail.example.com:993",
		Username:    "alice@example.com",
		Credentials: upstream.Password("app-password"),
	})
	if err != nil {
		log.Fatal(err) // um.ErrModeConflict: 1001 is forwarded by e-mail
	}

	// Later, on the status page.
	st := eng.Status("1001")
	switch {
	case !st.Connected:
		fmt.Printf("%s: not connected after %d failures: %v\n", st.Mailbox, st.Failures, st.LastError)
	case st.Lag > 0:
		fmt.Printf("%s: %v behind\n", st.Mailbox, st.Lag)
	default:
		fmt.Printf("%s: %d messages in sync at %s\n", st.Mailbox, st.Messages, st.LastSync.Format("15:04:05"))
	}
}

// Microsoft 365 and Google take OAuth2 access tokens instead of passwords.
// The engine asks for a token at every connect, so the host's OAuth2
// client refreshes it behind Token. This example needs a mail server, so
// it is not run.
func ExampleOAuth2() {
	ctx := context.Background()
	store, err := boltstore.Open("/var/lib/pbx/voicemail", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	svc, err := um.New(store, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	state, err := upstream.NewFileState("/var/lib/pbx/upstream")
	if err != nil {
		log.Fatal(err)
	}
	eng, err := upstream.New(svc, state, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer eng.Close()

	// accessToken stands for the host's OAuth2 client, for example a
	// golang.org/x/oauth2 TokenSource's Token().AccessToken.
	var accessToken func(ctx context.Context) (string, error)

	// Bob's voicemail goes to a folder of its own in his mailbox, created
	// when missing; his other mail in the account is never touched.
	err = eng.Add(ctx, upstream.Config{
		Mailbox:     "1002",
		Addr:        "outlook.office365.com:993",
		Username:    "bob@example.com",
		Credentials: upstream.OAuth2{Token: accessToken},
		Folder:      "Voicemail",
	})
	if err != nil {
		log.Fatal(err)
	}

	// Sync compares both sides at once and waits for it: a "sync now"
	// button.
	if err := eng.Sync(ctx, "1002"); err != nil {
		fmt.Println("sync failed:", err)
	}
}
