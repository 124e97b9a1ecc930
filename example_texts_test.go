package um_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
)

// A PBX in Germany shows voicemail in its users' time zone and language;
// one mailbox's user reads English. The IMAP server, the sync engine and
// forwarding all render through the Service, so they all follow.
func ExampleNewTexts() {
	german, err := um.NewTexts("de",
		`Sprachnachricht von {{or .CallerName .CallerNumber "unbekannt"}}, {{.Length}}`,
		"Sprachnachricht von {{or .CallerName .CallerNumber \"unbekannt\"}}\nZeit: {{.Time.Format \"02.01.2006 15:04\"}}\nLänge: {{.Length}}\n")
	if err != nil {
		log.Fatal(err)
	}
	berlin := time.FixedZone("CET", 3600) // time.LoadLocation("Europe/Berlin") on a system with tzdata
	svc, err := um.New(memstore.New(), &um.Options{
		Render: um.RenderOptions{Location: berlin, Texts: german, Domain: "pbx.example.com"},
		TextsFor: func(mailbox string) *um.Texts {
			if mailbox == "1002" {
				return um.EnglishTexts
			}
			return nil // the default above
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	ctx := context.Background()
	for _, box := range []string{"1001", "1002"} {
		mb, err := svc.CreateMailbox(ctx, box)
		if err != nil {
			log.Fatal(err)
		}
		m, err := mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Silence(42 * time.Second)), CallerNumber: "+4930123",
			CallerName: "Jürgen", Time: time.Date(2026, 12, 1, 8, 19, 33, 0, time.UTC)})
		if err != nil {
			log.Fatal(err)
		}
		header := string(svc.RenderEmail(m, um.RenderOptions{Mailbox: box}).Header())
		for _, line := range strings.Split(header, "\r\n") {
			if strings.HasPrefix(line, "Date:") || strings.HasPrefix(line, "Subject:") {
				fmt.Println(box, line)
			}
		}
	}
	// Output:
	// 1001 Date: Tue, 01 Dec 2026 09:19:33 +0100
	// 1001 Subject: Sprachnachricht von =?utf-8?q?J=C3=BCrgen,?= 0:42
	// 1002 Date: Tue, 01 Dec 2026 09:19:33 +0100
	// 1002 Subject: Voice message from =?utf-8?q?J=C3=BCrgen?= (+4930123), 0:42
}
