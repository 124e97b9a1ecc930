package imapserver

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// deferringStore applies flag changes at once and, for a caller that
// brings a um.Durability, leaves their durability to a wait the test ends
// by sending its outcome on durable, as a store with a log whose sync runs
// in the background does.
type deferringStore struct {
	um.Store
	durable chan error
}

func (s *deferringStore) Unwrap() um.Store { return s.Store }

func (s *deferringStore) SetFlags(ctx context.Context, mailbox string, ids []uuid.UUID, op um.FlagOp) ([]um.Message, error) {
	changed, err := s.Store.SetFlags(ctx, mailbox, ids, op)
	if d := um.DurabilityFrom(ctx); d != nil && err == nil {
		d.Defer(func(ctx context.Context) error {
			select {
			case err := <-s.durable:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}
	return changed, err
}

// TestResponsesWaitForDurability: a STORE applied by a store that makes it
// durable later is visible at once (to the phone, to other sessions), but
// its client hears nothing, neither the STORE's OK nor the responses of
// the commands pipelined behind it, until the change is durable. When it
// cannot be made durable the connection is dropped without the OK: the
// client sees what a crash would show, never an acknowledgment of a change
// that may be lost.
func TestResponsesWaitForDurability(t *testing.T) {
	var ds *deferringStore
	e := newEnvOn(t, func(s um.Store) um.Store {
		ds = &deferringStore{Store: s, durable: make(chan error)}
		return ds
	}, um.Options{}, nil)
	m := e.deposit("1001", "+4930111", 800)
	flagged := func() bool {
		got, err := e.mailbox("1001").Message(context.Background(), m.ID)
		return err == nil && got.Flags.Has(um.FlagFlagged)
	}

	for _, outcome := range []error{nil, errors.New("disk gone")} {
		r := dialRaw(t, e.tlsAddr, e.clientTLS)
		if l := r.cmd("l", "LOGIN alice alice-pw"); !strings.HasPrefix(l, "l OK") {
			t.Fatalf("LOGIN = %q", l)
		}
		if l := r.cmd("s", "SELECT INBOX"); !strings.HasPrefix(l, "s OK") {
			t.Fatalf("SELECT = %q", l)
		}
		op := "+FLAGS"
		if flagged() {
			op = "-FLAGS"
		}
		r.send("a1 STORE 1 " + op + " (\\Flagged)\r\na2 NOOP\r\n")
		waitFor(t, "the STORE applied", func() bool { return flagged() == (op == "+FLAGS") })

		// Nothing comes while the change is not durable.
		r.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if l, err := r.br.ReadString('\n'); err == nil || l != "" {
			t.Fatalf("the client got %q (%v) before the STORE was durable", l, err)
		}

		ds.durable <- outcome
		if outcome == nil {
			lines := r.until("a2")
			if !strings.Contains(strings.Join(lines, "\n"), "a1 OK") || !strings.HasPrefix(lines[len(lines)-1], "a2 OK") {
				t.Errorf("after the STORE was durable: %q, want a1 OK and a2 OK", lines)
			}
			r.cmd("z", "LOGOUT")
			continue
		}
		r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		rest, _ := r.br.ReadString(0) // up to the close
		if strings.Contains(rest, "a1 OK") || strings.Contains(rest, "a2 OK") {
			t.Errorf("after the STORE could not be made durable the client got %q, want no OK", rest)
		}
		if !r.closed() {
			t.Errorf("the connection stayed open after a change could not be made durable")
		}
	}
}
