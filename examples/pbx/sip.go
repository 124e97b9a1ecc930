package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/sipmwi"
	"github.com/emiago/sipgo/sip"
)

// notifyFlag holds the -mwi-notify contacts: mailbox -> SIP URIs.
type notifyFlag map[string][]string

func (n notifyFlag) String() string {
	var parts []string
	for box, uris := range n {
		for _, u := range uris {
			parts = append(parts, box+"="+u)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (n notifyFlag) Set(v string) error {
	box, uri, ok := strings.Cut(v, "=")
	if !ok || box == "" || !strings.HasPrefix(uri, "sip:") {
		return errors.New("want BOX=sip:USER@HOST[:PORT]")
	}
	var u sip.Uri
	if err := sip.ParseUri(uri, &u); err != nil || u.Host == "" {
		return fmt.Errorf("%q is no SIP URI with a host", uri)
	}
	n[box] = append(n[box], uri)
	return nil
}

// newLamps returns the SIP side of the lamps, or nil when neither -sip nor
// -mwi-notify is given. It exists before the Service, whose MWI hook feeds
// it.
func newLamps(cfg *config, stderr io.Writer) (*sipmwi.Server, error) {
	if cfg.sipAddr == "" && len(cfg.mwiNotify) == 0 {
		return nil, nil
	}
	return sipmwi.New(&sipmwi.Options{Contacts: cfg.mwiNotify, Logger: sipLogger(stderr)})
}

// sipLogger logs the SIP side's warnings (a store that fails a
// SUBSCRIBE's read) to stderr; phones' faults stay quiet.
func sipLogger(stderr io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// chainMWI prints each lamp change, then hands it to the SIP phones.
func chainMWI(print um.MWIFunc, lamps *sipmwi.Server) um.MWIFunc {
	if lamps == nil {
		return print
	}
	return func(st um.MWIState) {
		print(st)
		lamps.Update(st)
	}
}

// startSIP serves SIP on cfg.sipAddr over UDP and TCP, and returns the
// function that ends every subscription and stops it.
func startSIP(svc *um.Service, lamps *sipmwi.Server, cfg *config, stderr io.Writer) (func(), error) {
	if lamps == nil {
		return func() {}, nil
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		lamps.Shutdown(ctx)
	}
	// A phone subscribes to its lamp only once registered (baresip, most
	// desk phones). The demo has no call control: it takes any REGISTER.
	lamps.SIP().OnRegister(acceptRegister)
	if cfg.sipAddr != "" {
		udp, err := net.ListenPacket("udp", cfg.sipAddr)
		if err != nil {
			lamps.Close()
			return nil, fmt.Errorf("sip: %w", err)
		}
		// TCP on the port UDP got, so that "-sip 127.0.0.1:0" works too.
		host, _, _ := net.SplitHostPort(cfg.sipAddr)
		_, port, _ := net.SplitHostPort(udp.LocalAddr().String())
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, port))
		if err != nil {
			udp.Close()
			lamps.Close()
			return nil, fmt.Errorf("sip: %w", err)
		}
		go lamps.ServeUDP(udp)
		go lamps.ServeTCP(tcp)
		fmt.Fprintf(stderr, "SIP MWI:        udp+tcp %s (phones subscribe to sip:BOX@%s, Event: message-summary)\n",
			udp.LocalAddr(), udp.LocalAddr())
		prev := stop
		stop = func() { prev(); udp.Close(); tcp.Close() }
	}
	lamps.Attach(svc)
	return stop, nil
}

// acceptRegister answers a REGISTER with 200, echoing its Contact: the
// demo's stand-in for a registrar.
func acceptRegister(req *sip.Request, tx sip.ServerTransaction) {
	// baresip 1.0.0 (Debian 12) starts its MWI module with a 1 ms timer
	// that walks the subscriptions it made, and never returns if the
	// registration completed before that timer ran, which only a loopback
	// registrar answering at once achieves.
	time.Sleep(50 * time.Millisecond)
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	if res.To() != nil {
		if _, ok := res.To().Params.Get("tag"); !ok {
			res.To().Params.Add("tag", sip.GenerateTagN(16))
		}
	}
	expires := "3600"
	if h := req.GetHeader("Expires"); h != nil {
		if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n >= 0 {
			expires = strconv.Itoa(min(n, 3600))
		}
	}
	if c := req.Contact(); c != nil {
		res.AppendHeader(sip.NewHeader("Contact", "<"+c.Address.String()+">;expires="+expires))
	}
	res.AppendHeader(sip.NewHeader("Expires", expires))
	_ = tx.Respond(res)
}
