// Package sipmwi lights the message-waiting lamps of SIP phones from um:
// RFC 3842 message-summary bodies over SUBSCRIBE and NOTIFY (RFC 6665),
// with the SIP stack github.com/emiago/sipgo.
//
// It is a Go module of its own (github.com/embeddedum/um/sipmwi), so that
// um's module keeps no SIP dependency: a host that lights lamps some other
// way never downloads one.
//
// # Wiring it next to the IMAP server
//
// The Server exists before the Service, because um.New takes the MWI hook;
// Attach then gives it the Service to answer SUBSCRIBEs from:
//
//	lamps, err := sipmwi.New(&sipmwi.Options{Domain: "pbx.example.com"})
//	if err != nil { return err }
//	svc, err := um.New(store, &um.Options{MWI: lamps.Update})
//	if err != nil { return err }
//	lamps.Attach(svc)
//	udp, _ := net.ListenPacket("udp", ":5060")
//	tcp, _ := net.Listen("tcp", ":5060")
//	go lamps.ServeUDP(udp)
//	go lamps.ServeTCP(tcp)
//	imap, err := imapserver.New(svc, &imapserver.Options{Authenticate: checkPIN, TLSConfig: tlsConf})
//	go imap.ServeTLS(tlsListener)
//	// at exit: lamps.Shutdown(ctx), then svc.Close()
//
// A host with a hook of its own calls lamps.Update from it. Phones then
// subscribe to sip:1001@pbx.example.com with Event: message-summary, and
// phones that never subscribe are listed in Options.Contacts. SIP returns
// the sipgo server underneath, where a host answers its other methods
// (REGISTER, INVITE) on the same address.
//
// # Subscriptions
//
// A SUBSCRIBE for message-summary is answered 200, with Expires and a
// Contact, and followed by a NOTIFY of the mailbox's current state, read
// from the Source. A refresh in the dialog gets 200 and a NOTIFY too;
// Expires: 0, or an expiry without refresh, ends the subscription with a
// NOTIFY of Subscription-State: terminated;reason=timeout. Expires: 0 on a
// new dialog is a fetch: one terminated NOTIFY, nothing kept. Refusals:
// 489 (another event package, with Allow-Events), 404 (no such mailbox),
// 406 (an Accept without the body type), 423 (below MinExpires, with
// Min-Expires), 481 (a refresh of an unknown dialog), 403 (Options.Allow
// said no), 503 with Retry-After (before Attach, during Shutdown, over a
// limit). The Request-URI's user part names the mailbox (Options.Mailbox
// maps it otherwise).
//
// NOTIFYs over UDP leave from the listening socket and are retransmitted as
// RFC 3261 requires; over TCP they go back on the subscriber's connection,
// and once that connection has closed the subscription ends at its next
// NOTIFY, without one: the phone subscribes again on its new connection.
//
// # Queues and failures
//
// Update never waits on the network. Each dialog holds one pending state,
// which a newer one replaces, and a goroutine of its own sends it, one
// NOTIFY at a time: a phone that is slow or gone delays no other phone and
// neither um, and piles up nothing. A NOTIFY unanswered within
// NotifyTimeout, or refused (481 or another error answer without
// Retry-After), ends that subscription (RFC 6665 section 4.2.2); the phone
// subscribes again when it is back. Unsolicited NOTIFYs to Options.Contacts
// have the same queues and are never dropped for a failure.
//
// # Limits
//
// Subscriptions are capped in total (MaxSubscriptions), per source IP
// address (MaxPerPeer) and per mailbox (MaxPerMailbox), so a flood of
// SUBSCRIBEs holds bounded memory: beyond a cap they are answered 503 and
// kept nowhere. sipgo reads at most 64 KiB a message.
//
// Over TCP, a source address (an IPv6 /64 as one) holds at most
// MaxConnsPerPeer connections and all peers together MaxConns. sipgo runs
// each request on a goroutine of its own, which lives until the request's
// answer is written, and reads on without waiting for it; so at
// MaxPendingPerConn requests of one connection still unanswered, the
// server reads nothing more from it until one is. A write that does not complete within TCPWriteTimeout closes its
// connection: a peer that sends requests and never reads the answers costs
// at most MaxPendingPerConn goroutines, for at most TCPWriteTimeout, and
// then its connection. A connection held at the cap for TCPIdleTimeout
// (its requests are never answered), or on which nothing arrives for that
// long, is closed too, except that the connection of a subscription stays
// open while the subscription lives, since its NOTIFYs go back on it. In
// all, TCP costs at most MaxConns connections, each with sipgo's buffers
// (32 KiB to read, up to 64 KiB for a message arriving) and at most
// MaxPendingPerConn goroutines. These limits hold for the connections
// peers open. The ones sipgo dials itself, to the configured contacts of
// Options.Contacts with transport=tcp, are sipgo's alone: not counted, no
// timeouts, no cap on the requests read from them, so a contact that
// stops reading holds its NOTIFY's goroutine until Close. List phones
// there that the host trusts as it trusts its own network.
//
// sipgo also keeps, per UDP listener, an entry for every source address it
// has read from; a host exposed to the open Internet puts a SIP proxy or a
// firewall in front, as it would for call control. A few of sipgo's
// transport warnings go to its process-wide logger (sip.SetDefaultLogger),
// which this package leaves to the host.
//
// # Clusters
//
// On a store shared by several nodes, um's MWI hook hears every lamp change
// made on any node, so a phone may hold its subscription on any node: each
// node runs its own Server, with Update in its hook unfiltered (whatever
// MWIState.Node says), and notifies the phones subscribed to it.
package sipmwi
