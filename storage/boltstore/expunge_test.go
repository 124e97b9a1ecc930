package boltstore

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// TestExpungeReleasesContent checks that Expunge releases both kinds of
// content as Remove does: a content no other copy names leaves the
// database or the disk, a shared one stays for its copy, and the counts of
// um.Counter follow the messages.
func TestExpungeReleasesContent(t *testing.T) {
	s := openStore(t)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	small, big := randomBytes(100), randomBytes(inlineMax+1)
	var ms []um.Message
	for _, c := range [][]byte{small, big, randomBytes(200), randomBytes(2 * inlineMax)} {
		ms = append(ms, appendMsg(t, s, "1001", um.Inbox, c))
	}
	// Messages 0 and 1 have a copy in Trash, which keeps their contents.
	copies, err := s.Copy(ctx, "1001", []uuid.UUID{ms[0].ID, ms[1].ID}, um.Trash, newIDs(2), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	del := um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagDeleted}
	if _, err := s.SetFlags(ctx, "1001", []uuid.UUID{ms[0].ID, ms[1].ID, ms[2].ID, ms[3].ID}, del); err != nil {
		t.Fatal(err)
	}
	if n, i := countFiles(t, s), inlineCount(t, s); n != 2 || i != 2 {
		t.Fatalf("before Expunge: %d content files and %d contents in the database, want 2 and 2", n, i)
	}

	gone, err := s.Expunge(ctx, "1001", um.Inbox, nil)
	if err != nil {
		t.Fatalf("Expunge() = %v", err)
	}
	if len(gone) != 4 {
		t.Fatalf("Expunge() removed %d messages, want 4", len(gone))
	}
	for i, m := range gone {
		if m.ID != ms[i].ID || m.UID != ms[i].UID || m.Folder != um.Inbox || m.Size != ms[i].Size || !m.Flags.Has(um.FlagDeleted) {
			t.Errorf("Expunge()[%d] = %+v, want message %d of INBOX as stored, \\Deleted", i, m, i)
		}
	}
	if n, i := countFiles(t, s), inlineCount(t, s); n != 1 || i != 1 {
		t.Errorf("after Expunge: %d content files and %d contents in the database, want the shared 1 and 1", n, i)
	}
	if b := readAll(t, s, "1001", copies[0].ID); !bytes.Equal(b, small) {
		t.Error("the copy of an expunged small content no longer reads back")
	}
	if b := readAll(t, s, "1001", copies[1].ID); !bytes.Equal(b, big) {
		t.Error("the copy of an expunged content file no longer reads back")
	}
	st, err := s.CountMWI(ctx, "1001")
	if err != nil || st.New != 0 || st.Old != 0 {
		t.Errorf("CountMWI() after Expunge = %+v, %v; want an empty INBOX", st, err)
	}
	u, err := s.Usage(ctx, "1001")
	if err != nil || u.Messages != 0 {
		t.Errorf("Usage() after Expunge = %+v, %v; want no message outside Trash", u, err)
	}

	// The last references go: both kinds are deleted, and the state survives
	// a restart.
	if _, err := s.SetFlags(ctx, "1001", []uuid.UUID{copies[0].ID, copies[1].ID}, del); err != nil {
		t.Fatal(err)
	}
	gone, err = s.Expunge(ctx, "1001", um.Trash, []um.UID{copies[1].UID, copies[0].UID, copies[1].UID, 99})
	if err != nil || len(gone) != 2 || gone[0].ID != copies[0].ID || gone[1].ID != copies[1].ID {
		t.Fatalf("Expunge(UIDs, unordered, repeated, unknown) = %+v, %v; want both copies in UID order", gone, err)
	}
	s = reopen(t, s)
	if n, i := countFiles(t, s), inlineCount(t, s); n != 0 || i != 0 {
		t.Errorf("after expunging the last copies: %d content files and %d contents in the database, want none", n, i)
	}
	if _, err := s.Expunge(ctx, "1002", um.Inbox, nil); !errors.Is(err, um.ErrNotFound) {
		t.Errorf("Expunge(unknown mailbox) = %v, want ErrNotFound", err)
	}
	if gone, err := s.Expunge(ctx, "1001", um.Inbox, []um.UID{}); err != nil || gone != nil {
		t.Errorf("Expunge(no UIDs) = %+v, %v; want nil, nil", gone, err)
	}
}
