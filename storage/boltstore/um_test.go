package boltstore

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/wav"
)

// TestServiceOverRestart runs um's voicemail flow on the store, restarts
// both, and checks that the mailbox, its lamp and its UIDs are as they were.
func TestServiceOverRestart(t *testing.T) {
	opts := &um.Options{}
	s := openStore(t)
	svc, err := um.New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := svc.CreateMailbox(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	audio := wav.Tone(time.Second)
	var msgs []um.Message
	for i := 0; i < 3; i++ {
		m, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(audio), CallerNumber: "+4930123456", Duration: time.Second, Urgent: i == 0})
		if err != nil {
			t.Fatalf("Deposit() = %v", err)
		}
		msgs = append(msgs, m)
	}
	if err := mb.MarkHeard(ctx, msgs[1].ID); err != nil {
		t.Fatal(err)
	}
	if err := mb.Delete(ctx, msgs[2].ID); err != nil {
		t.Fatal(err)
	}
	want, err := mb.MWI(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want.New != 1 || want.Old != 1 || want.UrgentNew != 1 {
		t.Errorf("MWI() = %v, want 1/1 (1/0)", want)
	}
	inbox, err := mb.List(ctx, um.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	svc.Close()

	s = reopen(t, s)
	svc, err = um.New(s, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	mb, err = svc.Mailbox(ctx, "1001")
	if err != nil {
		t.Fatalf("Mailbox() after restart = %v", err)
	}
	got, err := mb.MWI(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("MWI() after restart = %v, want %v", got, want)
	}
	after, err := mb.List(ctx, um.Inbox)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(inbox) {
		t.Fatalf("INBOX after restart has %d messages, want %d", len(after), len(inbox))
	}
	for i := range after {
		if after[i].ID != inbox[i].ID || after[i].UID != inbox[i].UID || after[i].Flags != inbox[i].Flags || !after[i].Time.Equal(inbox[i].Time) {
			t.Errorf("INBOX[%d] after restart = %+v, want %+v", i, after[i], inbox[i])
		}
	}
	rc, err := mb.OpenAudio(ctx, msgs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(b, audio) {
		t.Errorf("audio after restart: %d bytes, err %v; want the %d deposited", len(b), err, len(audio))
	}
	trash, err := mb.List(ctx, um.Trash)
	if err != nil || len(trash) != 1 || trash[0].ID != msgs[2].ID {
		t.Errorf("Trash after restart = %v, %v; want the deleted message", trash, err)
	}
}
