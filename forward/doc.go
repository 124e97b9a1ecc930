// Package forward sends a copy of each new voicemail of a mailbox to the
// user's e-mail address over SMTP: the "forward by e-mail" delivery mode.
//
// # Model
//
// A Forwarder holds one SMTP submission account (Options) and, per voice
// mailbox, a destination address (Config). Each mailbox's forwarding
// follows the mailbox's changes (um.Service.Subscribe) and, for every
// voicemail deposited in INBOX, renders it with um.RenderEmail (the same
// bytes the IMAP server and the sync engine show) and submits it: STARTTLS
// or implicit TLS, then AUTH PLAIN, MAIL, RCPT, DATA. Messages moved into
// INBOX (an undelete) and e-mails mail clients appended are not forwarded,
// so each voicemail goes out once. Voicemail is forwarded in the order of
// its INBOX UIDs, which is the order it was deposited.
//
// With Config.MarkHeard the voicemail is marked heard once the server has
// accepted it, so the lamp goes off: the e-mail is the user's copy.
//
// # Clusters: one owner per mailbox
//
// When the store has um.Leaser (memstore, boltstore and pgstore do), a
// mailbox's forwarding runs on one node at a time: every node configured
// for it asks for the mailbox's "forward" lease, and only the one holding
// it (Status.Owner) sends, the voicemail deposited on any node. The owner
// renews its lease; when it dies, the lease runs out after
// Options.LeaseTTL and another configured node takes the work over. When
// the store has um.OutwardState too (the same three do), the forwarding
// state lives in the store, so the next owner continues where the last one
// stopped; every write of it is fenced by the lease (a node that lost its
// lease cannot write over its successor's state, and stops its work at
// once when it tries).
//
// Without um.Leaser every node forwards the voicemail deposited on it, as
// a single node does.
//
// # Exactly once, and the message in doubt
//
// A message is sent once when its owner stops or dies before or after a
// submission. What cannot be known is the outcome of a submission cut off
// after the end of its data reached the server and before the server's
// answer was read and recorded: SMTP has no way to ask a server whether it
// took a message. The Forwarder narrows that window and resolves it this
// way:
//
//   - Just before it writes the end of the data (the line with a single
//     dot, after which the server may accept the message), it records in
//     the state that the message is in doubt. That write is fenced by the
//     lease: a node that lost its lease gets um.ErrLeaseHeld, drops the
//     connection without ending the data (so the server discards the
//     message) and stops.
//   - Once the server has answered, the state records the message as sent
//     (or refused) and no longer in doubt.
//   - A node that takes the work over (or a restarted process) and finds a
//     message in doubt sends it again: a lost voicemail is worse than a
//     duplicate e-mail. The copy is byte for byte the same e-mail, with
//     the same Message-ID and X-Um-Message-Id, so a receiving server or
//     mail client that drops duplicates by Message-ID shows it once. Status
//     counts these in Resent.
//   - A submission that gets no answer to its end of data (the connection
//     drops, Options.Timeout runs out) is in doubt the same way, and is
//     retried the same way; Resent counts it too.
//
// So a duplicate can only follow a death in the one round trip between
// the end of data and the saving of the answer; a death anywhere else
// (between messages, while connecting, while sending the data) sends each
// voicemail exactly once.
//
// # Failures
//
// A failed submission is retried with exponential backoff, in order;
// messages behind it wait. While the mail server or the network is down
// (connection errors, 4xx answers) it is retried however long that lasts.
// A message refused permanently (a 5xx answer such as a bad recipient or
// failed authentication, or a server certificate that does not verify)
// Options.MaxAttempts times is given up (it stays in the voice mailbox)
// and Status reports it; it is not tried again, after a restart either.
//
// # State and restarts
//
// The state of a mailbox is INBOX's UIDVALIDITY, a watermark (the highest
// INBOX UID whose message was handled: forwarded, given up, or not a
// deposit), the IDs of the last messages forwarded and the message in
// doubt, if any. It is kept in the store (um.OutwardState, with a lease),
// else in a small file per mailbox in Options.StateDir, replaced
// atomically (write, fsync, rename, directory fsync) after each message. A
// state file found in StateDir when the store keeps the state is migrated
// into the store once and removed.
//
// When a node gains a mailbox's forwarding (at Add, after a restart, on
// takeover) it lists INBOX and forwards, in order, the voicemail above the
// watermark that was not forwarded yet: what was deposited but not sent
// when the last owner stopped, and what was deposited while none ran. The
// same listing follows a subscription overflow (um.ErrOverflow), when the
// changes that would have named the deposits were dropped.
//
// A mailbox forwarded for the first time (no state, or after Remove)
// starts at INBOX's end as it was at Add: its earlier voicemail is not
// mailed. So does a mailbox whose INBOX UIDVALIDITY changed (a replaced
// store).
//
// A listing does not say how a message came into INBOX. So the catch-up
// forwards every voicemail above the watermark except the recently
// forwarded ones and those the changes showed were moved there: a message
// deposited before forwarding began and undeleted while no Forwarder ran
// is mailed, and so, in a cluster, is one undeleted on another node whose
// change had not reached the owner when it listed INBOX.
//
// Without a store that keeps the state and without StateDir, the state is
// in memory: voicemail deposited but not yet sent when the process stops
// is not forwarded after a restart. A subscription overflow is caught up
// all the same, from the watermark in memory.
//
// # Exclusivity
//
// A mailbox is either forwarded or synced to a mail account (package
// upstream), never both: Add claims the delivery mode "email-forward" with
// um.Service.ClaimDelivery and fails with an error wrapping
// um.ErrModeConflict, naming the mode that holds, when the mailbox syncs.
// With a store that keeps delivery modes (um.DeliveryModes) the claim holds
// across the nodes of a cluster and across restarts: Close keeps it, and
// only Remove, which says the mailbox is no longer forwarded by this node,
// releases it.
package forward
