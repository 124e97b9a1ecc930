package sipmwi_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/sipmwi"
	"github.com/embeddedum/um/storage/memstore"
	"github.com/embeddedum/um/wav"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Example wires the lamps into a um Service and serves them on loopback; a
// phone made with sipgo subscribes and sees its lamp light on a deposit.
func Example() {
	ctx := context.Background()
	lamps, err := sipmwi.New(&sipmwi.Options{Domain: "pbx.example.com"})
	if err != nil {
		panic(err)
	}
	svc, err := um.New(memstore.New(), &um.Options{MWI: lamps.Update})
	if err != nil {
		panic(err)
	}
	defer svc.Close()
	mb, _ := svc.EnsureMailbox(ctx, "1001")
	lamps.Attach(svc)
	udp, _ := net.ListenPacket("udp", "127.0.0.1:0")
	go lamps.ServeUDP(udp)
	defer lamps.Close()

	// The phone: answers NOTIFYs with 200 and prints their bodies.
	bodies := make(chan string, 10)
	ua, _ := sipgo.NewUA()
	defer ua.Close()
	phoneSrv, _ := sipgo.NewServer(ua)
	phoneSrv.OnNotify(func(req *sip.Request, tx sip.ServerTransaction) {
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		// The body's lines end in CRLF, as RFC 3842 has them.
		bodies <- strings.ReplaceAll(string(req.Body()), "\r\n", "\n")
	})
	phoneConn, _ := net.ListenPacket("udp", "127.0.0.1:0")
	go phoneSrv.ServeUDP(phoneConn)
	phone, _ := sipgo.NewClient(ua)
	pbx := udp.LocalAddr().(*net.UDPAddr)
	req := sip.NewRequest(sip.SUBSCRIBE, sip.Uri{Scheme: "sip", User: "1001", Host: "127.0.0.1", Port: pbx.Port})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "phone",
		Host: "127.0.0.1", Port: phoneConn.LocalAddr().(*net.UDPAddr).Port}})
	req.AppendHeader(sip.NewHeader("Event", "message-summary"))
	res, err := phone.Do(ctx, req)
	if err != nil {
		panic(err)
	}
	fmt.Println("SUBSCRIBE:", res.StatusCode)
	fmt.Print(<-bodies)

	mb.Deposit(ctx, um.Deposit{Audio: bytes.NewReader(wav.Tone(time.Second)), Duration: time.Second})
	fmt.Print(<-bodies)
	// Output:
	// SUBSCRIBE: 200
	// Messages-Waiting: no
	// Message-Account: sip:1001@pbx.example.com
	// Voice-Message: 0/0 (0/0)
	// Messages-Waiting: yes
	// Message-Account: sip:1001@pbx.example.com
	// Voice-Message: 1/0 (0/0)
}
