// Package um gives a PBX written in Go voicemail that mail clients see over
// IMAP: embedded unified messaging.
//
// A caller leaves a message; call control hands the finished recording to
// um. From then on um is the single source of truth for that message, shared
// in-process by the telephone user interface, by IMAP clients (Outlook,
// Thunderbird, iOS Mail) through the embedded server in package imapserver,
// by a sync engine that mirrors voice mailboxes into users' own mail servers
// (package upstream), and by the message-waiting indicator (MWI) hook that
// the host turns into SIP NOTIFYs.
//
// # Getting started
//
// A host creates one Service over a Store and keeps it for the life of the
// process:
//
//	store, err := boltstore.Open("/var/lib/pbx/voicemail", nil) // or memstore.New() in tests
//	svc, err := um.New(store, &um.Options{
//		MWI: func(s um.MWIState) { sendNotify(s.Mailbox, s.MessageSummary("sip:"+s.Mailbox+"@pbx")) },
//		MaxMessages: 100, MaxRecordedTime: 30 * time.Minute, TrashRetention: 30 * 24 * time.Hour,
//	})
//	mb, err := svc.EnsureMailbox(ctx, "1001")
//	msg, err := mb.Deposit(ctx, um.Deposit{Audio: recording, CallerNumber: from})
//
// The README's quick start, which also runs as Example_quickStart, adds
// the IMAP server and the shutdown order.
//
// Call control then lists (Mailbox.List), plays (Mailbox.OpenAudio), marks
// heard (Mailbox.MarkHeard), deletes (Mailbox.Delete, to Trash) and restores
// (Mailbox.Undelete) messages; mail clients do the same over IMAP, and every
// side sees every other's changes at once.
//
// # Words
//
// A mailbox is a user's voice mailbox, named like the extension ("1001"). A
// folder is what IMAP calls a mailbox: INBOX, Trash and the user's own
// folders. Every mailbox has INBOX, where deposits arrive, and Trash, where
// deleted messages wait until purged.
//
// # The voice/IMAP mapping
//
//	phone / call control      IMAP                                   MWI
//	deposit                   new message in INBOX, no \Seen         new+1
//	play, MarkHeard           \Seen set                              new-1, old+1
//	MarkUnheard               \Seen cleared                          new+1, old-1
//	Delete                    moved to Trash (or purged, by option)  counts drop
//	Undelete                  moved back to INBOX with a new UID     counts return
//	-                         client sets \Deleted                   counts drop
//	-                         client fetches BODY[] without PEEK     heard
//	urgent deposit            \Flagged set, Importance: high         urgent+1
//	SetUrgent(true/false)     \Flagged set / cleared                 urgent+1 / -1
//	list shows urgent         client stars (sets \Flagged)           urgent+1
//	list shows not urgent     client unstars (clears \Flagged)       urgent-1
//	-                         client marks read, then deletes        \Seen taken back
//	-                         client shows the next one on delete    \Seen taken back
//	-                         client puts a voicemail back in INBOX  counts return
//
// The lamp counts voicemail in INBOX without \Deleted: New unheard, Old
// heard, and the urgent ones among both again apart, as RFC 3842 writes them
// ("Voice-Message: 2/8 (1/0)"). Urgent means \Flagged (Message.IsUrgent):
// a caller's urgency at deposit sets it, and a mail client's star or unstar
// changes it for the phone and the lamp. The caller's choice at deposit stays
// in Message.Urgent and in the rendered "Importance: high", which never
// change, since a message's bytes never do.
//
// Each message has a stable ID (a UUID) and, in its folder, an IMAP UID. The
// store assigns UIDs in increasing order and keeps them and each folder's
// UIDVALIDITY across restarts, so mail clients never download everything
// again after the PBX restarts.
//
// # Mail client habits
//
// Mail clients do things to messages that mean something else for
// voicemail. um keeps a voicemail whole under them:
//
//   - Thunderbird and others mark a message read (\Seen) in the instant
//     before they move it to Trash or set \Deleted, one or many at once. A
//     \Seen that a client sets and the same client (the same WithSource
//     value) deletes within DeleteSeenWindow is taken back at the delete, so
//     the message waits in Trash, and comes back by Undelete, as unheard as
//     it was. DeleteSeenWindow says exactly what counts as heard.
//   - After a delete, Thunderbird displays the next message, which marks it
//     read. A \Seen the client sets on a message it does not delete, within
//     AutoDisplayWindow of its delete, is taken back at once and the client
//     is told: the voicemail was shown, not played.
//   - INBOX holds voicemail only, but a voicemail of this mailbox may always
//     come back to it: by MOVE or COPY of the voicemail itself, and by APPEND,
//     COPY or MOVE of an e-mail copy of it (a move back from another account
//     arrives as an APPEND). The copy is recognised by its X-Um-Message-Id
//     header and counts only when the store holds a voicemail of that ID in
//     this mailbox; the stored voicemail then returns, with its ID, flags and
//     heard state, never the offered bytes. Any other e-mail is refused with
//     ErrNotVoice and the plain-language InboxRefusal.
//   - A client's star is the phone's urgency, both ways (see above).
//
// # Changes and concurrency
//
// Service and Mailbox are safe for concurrent use. Changes to one mailbox
// are committed one at a time, in order; after each commit um publishes a
// Change to every Subscription of the mailbox. Each subscription has its own
// queue, and publishing never waits for a subscriber: a subscriber that
// falls MaxQueue changes behind loses its queue and is told so (ErrOverflow),
// and reloads. A change made with a context from WithSource is not delivered
// to the subscription with that Source, so an IMAP session does not see its
// own STORE echoed.
//
// The MWI hook runs on goroutines of um's own, never under a lock, after the
// commit. Calls for a mailbox come one at a time in commit order; a burst of
// changes may be merged into one call, but the last call always carries the
// final state. Calls for different mailboxes run in parallel on a bounded
// set of workers (Options.MWIWorkers), so a hook blocked on one phone does
// not delay another's lamp. Service.MWI answers the current state at any
// time, read from the store; Options.AnnounceMWI gives every lamp once at
// start.
//
// # Logs and metrics
//
// Options.Logger (log/slog) receives what has no caller to return to, at
// Warn for what um retries and Error for store faults, with a mailbox
// attribute where one is concerned. Options.Observer is told of deposits and
// of each hook call with its latency; package metrics turns that, a timed
// Store wrapper and the other packages' Stats and Status into Prometheus
// metrics, so this package needs no metrics library.
//
// # Stores
//
// A Store keeps mailboxes durably. Three come with um: storage/memstore (in
// memory, for tests), storage/boltstore (the embedded default: one directory,
// no server) and storage/pgstore (PostgreSQL, for clusters of PBX nodes that
// share mailboxes). A host may bring its own; storage/storetest is the
// conformance suite that tells whether it keeps the contract. Beyond the
// small Store interface, a store may offer optional ones, found by type
// assertion, each with a fallback: Counter (lamp counts and usage without
// listing), Expunger (IMAP EXPUNGE's check and removal in one atomic step),
// Watcher (changes made by other nodes) and Publisher, ModSeqer and
// FolderSubscriber (IMAP CONDSTORE, QRESYNC and subscriptions), Limiter
// (limits checked inside the store's transaction), DeliveryModes (the
// delivery mode of each mailbox, kept across nodes and restarts), Leaser and
// OutwardState (one owner at a time for a mailbox's outward work, and its
// state). A host that wraps its store keeps them by giving the wrapper an
// Unwrap method (Unwrapper); New logs which it found.
//
// A write returns once it is durable, unless its context carries a
// Durability (WithDurability): then a store that can, such as boltstore,
// returns once the change is applied and leaves the wait for the rest to the
// Durability, so that a server answering many requests at once (imapserver,
// for an IMAP client's pipelined commands) makes them share one sync and
// waits once before it answers.
//
// In a cluster every node runs its own Service with its own Options.Node
// over one shared store. Changes made on one node reach the subscribers of
// the others through the store's change feed (the Watcher interface). Every
// node's MWI hook hears every lamp change, made on that node or another,
// since a phone's SIP subscription may be held by any node; MWIState.Node
// says where the change was made, for a host that wants each change
// announced by one node only. Two caveats follow: a change whose
// notification is lost (a dropped feed connection) is announced by the other
// nodes when they reread the lamps they know, and on a store without Limiter
// the limits of Options are checked per node, so nodes depositing into one
// mailbox at once may pass a limit by a message or two (pgstore implements
// Limiter: they never do).
//
// # Limits
//
// Options.MaxMessages and Options.MaxRecordedTime bound what a mailbox holds
// outside Trash; a deposit, append, copy or undelete past them fails with
// ErrMailboxFull and stores nothing (a copy counts all the copies it adds).
// Options.MaxFolders (DefaultMaxFolders when zero) bounds the user folders
// of a mailbox: CreateFolder past it fails with ErrLimit. The IMAP server
// bounds the keywords clients set (imapserver.MaxKeywords).
// Options.TrashRetention purges Trash after an age. A mailbox
// delivers to mail clients either by IMAP sync or by e-mail forwarding, not
// both: Service.ClaimDelivery enforces it with ErrModeConflict, through the
// store when it implements DeliveryModes.
//
// # Recordings and their rendering
//
// Deposit checks a recording before it stores it: the type must be an
// audio media type whose format the first bytes do not contradict, and a
// WAV's length comes from its header whenever the caller gives none or
// one more than DurationTolerance off (Mailbox.Deposit has the rules).
// Each voicemail is shown to mail clients as one rendered e-mail
// (RenderEmail); Options.Render and Options.TextsFor set its time zone and
// wording, per language (NewTexts), for the IMAP server, the sync engine
// and forwarding alike, which render through Service.RenderEmail.
//
// # Standards
//
// IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051); message context (RFC 3458);
// Content-Duration (RFC 3803); message summary for SIP MWI (RFC 3842).
package um
