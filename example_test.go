package um_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
)

// A PBX wires um once at start-up: a store, and a hook that turns lamp
// changes into SIP NOTIFYs. Call control then deposits finished recordings.
func Example_depositThenMWI() {
	store := memstore.New()
	svc, _ := um.New(store, &um.Options{
		MWI: func(s um.MWIState) {
			fmt.Printf("lamp %s: waiting=%v %s\n", s.Mailbox, s.Waiting(), s)
		},
	})
	defer svc.Close()
	ctx := context.Background()

	mb, _ := svc.CreateMailbox(ctx, "1001")
	_, err := mb.Deposit(ctx, um.Deposit{
		Audio:        bytes.NewReader(wav.Silence(2 * time.Second)),
		CallerNumber: "+4930123456",
		CallerName:   "Alice",
		Duration:     2 * time.Second,
	})
	if err != nil {
		fmt.Println(err)
	}
	svc.FlushMWI()
	// Output: lamp 1001: waiting=true 1/0 (0/0)
}

// Playing a message on the phone marks it heard; the lamp goes out when no
// unheard message is left.
func Example_heardClearsTheLamp() {
	svc, _ := um.New(memstore.New(), &um.Options{
		MWI: func(s um.MWIState) { fmt.Println("MWI", s.Mailbox, s.Waiting(), s) },
	})
	defer svc.Close()
	ctx := context.Background()
	mb, _ := svc.CreateMailbox(ctx, "1001")
	m, _ := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(100 * time.Millisecond)), CallerNumber: "100", Urgent: true})
	svc.FlushMWI()

	audio, _ := mb.OpenAudio(ctx, m.ID)
	// ... stream audio to the caller ...
	audio.Close()
	mb.MarkHeard(ctx, m.ID)
	svc.FlushMWI()
	// Output:
	// MWI 1001 true 1/0 (1/0)
	// MWI 1001 false 0/1 (0/1)
}

// The state on demand renders as an RFC 3842 body for a SIP NOTIFY.
func ExampleMWIState_MessageSummary() {
	s := um.MWIState{Mailbox: "1001", New: 2, Old: 8, UrgentNew: 1}
	body := s.MessageSummary("sip:1001@pbx.example.com")
	// Lines end in CRLF, as SIP wants; shown here without the CR.
	fmt.Print(strings.ReplaceAll(string(body), "\r\n", "\n"))
	// Output:
	// Messages-Waiting: yes
	// Message-Account: sip:1001@pbx.example.com
	// Voice-Message: 2/8 (1/0)
}

// Mail clients and sync workers subscribe to a mailbox's changes; each
// subscription has its own queue, so none can hold up call control.
func ExampleService_Subscribe() {
	svc, _ := um.New(memstore.New(), nil)
	defer svc.Close()
	ctx := context.Background()
	mb, _ := svc.CreateMailbox(ctx, "1001")

	sub := svc.Subscribe("1001", um.SubscribeOptions{})
	defer sub.Close()
	m, _ := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(100 * time.Millisecond)), CallerNumber: "100"})
	mb.Delete(ctx, m.ID)

	<-sub.C()
	changes, _ := sub.Next()
	for _, c := range changes {
		for _, e := range c.Events {
			fmt.Println(e.Kind == um.EventAdded, e.Folder, e.Message.UID)
		}
	}
	// Output:
	// true INBOX 1
	// false INBOX 1
	// true Trash 1
}
