package um_test

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
)

// The phone's "mark urgent" is the mail client's star: both are \Flagged,
// and the lamp's urgent counts follow either.
func ExampleMailbox_SetUrgent() {
	svc, _ := um.New(memstore.New(), &um.Options{
		MWI: func(s um.MWIState) { fmt.Println("MWI", s) },
	})
	defer svc.Close()
	ctx := context.Background()
	mb, _ := svc.CreateMailbox(ctx, "1001")
	m, _ := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(100 * time.Millisecond)), CallerNumber: "100"})
	svc.FlushMWI()

	changed, _ := mb.SetUrgent(ctx, true, m.ID)
	svc.FlushMWI()
	fmt.Println("flags:", changed[0].Flags, "urgent:", changed[0].IsUrgent())
	// Output:
	// MWI 1/0 (0/0)
	// MWI 1/0 (1/0)
	// flags: \Flagged urgent: true
}

// A voicemail that a mail client moved away, to another account for
// example, comes back into INBOX when the client uploads its copy there:
// um recognises its own voicemail and restores it, with its ID and heard
// state. Other e-mail stays out of INBOX.
func ExampleMailbox_Append_voicemailBack() {
	svc, _ := um.New(memstore.New(), nil)
	defer svc.Close()
	ctx := context.Background()
	mb, _ := svc.CreateMailbox(ctx, "1001")
	m, _ := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(100 * time.Millisecond)), CallerNumber: "100"})

	// What the client holds: the voicemail as e-mail.
	var copyOf bytes.Buffer
	audio, _ := mb.OpenAudio(ctx, m.ID)
	um.RenderEmail(m, um.RenderOptions{Mailbox: "1001"}).WriteTo(&copyOf, audio)
	audio.Close()
	mb.Delete(ctx, m.ID) // the client's move away leaves it in Trash

	back, err := mb.Append(ctx, um.Inbox, um.Message{}, &copyOf)
	fmt.Println(back.ID == m.ID, back.Folder, back.Heard(), err)
	_, err = mb.Append(ctx, um.Inbox, um.Message{}, bytes.NewReader([]byte("Subject: hi\r\n\r\nhello\r\n")))
	fmt.Println(err)
	// Output:
	// true INBOX false <nil>
	// um: append to INBOX of "1001" refused (um: not a voice message): Only voicemail can be put in INBOX. Keep e-mail in another folder.
}
