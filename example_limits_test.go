package um_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
)

// A voice mailbox holds at most Options.MaxFolders user folders (500 by
// default); one more is refused with a *LimitError that says the limit,
// and nothing is created. The IMAP server answers it NO [LIMIT].
func ExampleLimitError() {
	svc, _ := um.New(memstore.New(), &um.Options{MaxFolders: 2})
	defer svc.Close()
	ctx := context.Background()
	mb, _ := svc.CreateMailbox(ctx, "1001")
	for _, name := range []string{"Saved", "Family", "Work"} {
		_, err := mb.CreateFolder(ctx, name)
		var le *um.LimitError
		switch {
		case errors.As(err, &le):
			fmt.Printf("%s refused: at most %d %s (ErrLimit: %v)\n", name, le.Max, le.What, errors.Is(err, um.ErrLimit))
		case err != nil:
			fmt.Println(err)
		default:
			fmt.Println(name, "created")
		}
	}
	// Output:
	// Saved created
	// Family created
	// Work refused: at most 2 folders in a voice mailbox (ErrLimit: true)
}
