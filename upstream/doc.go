// Package upstream keeps voice mailboxes in sync with their users' accounts
// on a mail server (Exchange, Dovecot, a hosted service): the "Exchange
// mode". The PBX is an IMAP client of that server (go-imap v2 imapclient),
// one connection per voice mailbox, and the um store stays authoritative.
//
// # Model
//
// An Engine runs a worker per mailbox added with Engine.Add. A worker
// connects (implicit TLS or STARTTLS, certificates verified; SASL PLAIN
// with a Password, OAUTHBEARER or XOAUTH2 with an OAuth2 token source),
// selects the target folder (Config.Folder, INBOX by default, created when
// missing) and makes both sides equal; then it waits for a change on
// either side and makes them equal again:
//
//   - A voicemail in the voice mailbox's INBOX is APPENDed once, rendered
//     by um.RenderEmail, with its flags. Its header X-Um-Message-Id (the
//     um message ID) identifies the copy from then on.
//   - Heard, unheard, \Flagged, \Answered and \Deleted go up with UID STORE
//     and come down with Mailbox.SetFlags.
//   - A voicemail deleted on the phone (moved to um's Trash, or purged) is
//     moved to the server's Trash (SPECIAL-USE \Trash, or Config.Trash)
//     with UID MOVE; without a Trash, or with Config.NoTrash, it gets
//     \Deleted and a UID EXPUNGE of its own UID (UIDPLUS). The engine never
//     sends a bare EXPUNGE: the folder may hold the user's other mail,
//     some of it marked \Deleted.
//   - A copy expunged or moved away on the server (to Trash, to another
//     folder) deletes the voicemail on the phone: it moves to um's Trash
//     (never purged, whatever um.Options.PurgeOnDelete says, also when the
//     phone deletes it at the same moment), so the lamp follows.
//
// # One truth: the rules
//
// Each pass compares the um store, the saved state and what the server
// holds, once per voicemail, and decides what to do (a pure function,
// table-tested); a small executor then does it. Whatever the user does in
// their account and whatever the server sends, these hold:
//
//   - A voicemail is deleted on the phone only after the removal of its
//     copy was confirmed for that UID under the same UIDVALIDITY. A copy a
//     header search does not find is asked about by UID with a UID FETCH
//     that also names a message the server has just shown (one the search
//     found, else the folder's last), so an empty answer from a folder that
//     is not empty is a contradiction (a server fault), never a
//     confirmation; a copy such a fetch shows is kept, whatever the search
//     said.
//   - A copy the user expunged, moved to Trash or filed into another
//     folder is never uploaded again: the voicemail is remembered as
//     removed (MessageState.Removed).
//   - Undelete on the phone leaves exactly one copy upstream: the copy is
//     moved back from the server's Trash, or, when Trash holds none (the
//     user expunged or filed it), uploaded once.
//   - No pass leaves an orphaned duplicate: of several copies of one
//     voicemail the one the state names (else the oldest) is kept and the
//     others are expunged (moved to Trash where the server cannot expunge
//     single UIDs).
//   - The server's Trash holds at most one live copy of a voicemail
//     deleted. The user's delete of a copy at the moment the engine moves
//     it can put a second one there: COPY is not atomic with it, nor is
//     every server's MOVE (Dovecot's is a copy and an expunge, and two at
//     once both copy). After moving copies to Trash the engine looks
//     there (one round trip: EXAMINE, a search per voicemail and the
//     folder's SELECT back to back) and removes second copies; the next
//     full pass looks again, for a user's move the server committed after
//     that look.
//   - Nothing said after the server's BYE, or in a session that broke a
//     limit, is acted on.
//
// # A server that misbehaves
//
// Every peer may be hostile, the mail server too. The engine reads the
// connection through a guard that ends it at a response line longer than
// Options.MaxLine, literals beyond Options.MaxLiteral (the engine asks for
// nothing larger than one header field), or an answer to one command (or
// what comes while idling) beyond Options.MaxAnswer and 1 KiB for each
// message a FETCH names, so endless LIST or SEARCH responses cost a few
// MiB, not what the server can send within a command's deadline. The
// bodies of FETCH responses the server sends unasked are read and
// dropped, never kept, and wake the worker only when they may concern one
// of its copies. Every command has a deadline (Options.CommandTimeout),
// so a server that falls silent is abandoned. Nor does a server that
// stops reading hold the engine: a connection is closed within a second
// whatever the server does (TLS's goodbye is given up on), so
// Engine.Remove and Engine.Close return, and Engine.Status never waits for
// a server. These are faults too:
//
//   - a UIDVALIDITY of 0, or one that changes within a session or within
//     ten minutes of the last change;
//   - a Trash whose UIDVALIDITY changed between the look that found
//     copies to remove there and their removal (the UIDs would name
//     other mail);
//   - a set of UIDs (a search's result, a COPYUID) that names 0 or
//     4294967295, more UIDs than the folder holds, or more than one for
//     one copy: a set is checked before it is expanded, never counted
//     through;
//   - an APPENDUID that names UID 0 or 4294967295, or another UIDVALIDITY
//     than the folder's (0 too): the next session finds the copy by its
//     header;
//   - a FETCH answer that names a copy without the flags asked for: read
//     as no flags, it would make a heard voicemail unheard;
//   - a response that does not parse (a garbled greeting, an ESEARCH with
//     a broken set, a FETCH with an unbalanced parenthesis): go-imap's
//     client ends the connection on it, but the server said it, so it is
//     not taken for a lost connection (see Reconnecting);
//   - a "(" in a capability list (CAPABILITY, ENABLED, a [CAPABILITY]
//     response code), on which go-imap's client would loop for ever: the
//     guard ends the connection first.
//
// A fault ends the session with an error wrapping ErrServerFault, changes
// nothing, and the worker backs off without the reset a successful sync
// would give; an upload whose copy the server then does not show is not
// tried again before one backoff period has passed.
//
// Changes from the server arrive by IDLE where offered (otherwise by polling
// every Options.PollInterval); the flags are then fetched only for the
// engine's own copies, and with CONDSTORE only those changed since the
// last sync (CHANGEDSINCE) unless something was expunged. New mail is
// searched by header, only above the UID of the newest copy the engine
// knows: a copy the user brought back from Trash or copied is seen while
// idling (delete wins; a duplicate is removed), and the user's other mail
// costs the server one small search. The engine
// changes um with um.WithSource, so its worker does not see its own echo;
// the MWI hook runs as for any other change.
//
// The engine touches only messages that carry its header, and among those
// only IDs this voice mailbox has: several mailboxes may share an account.
//
// # The state and why there is no journal
//
// The worker keeps a small State per mailbox: the folder's UIDVALIDITY,
// its CONDSTORE HIGHESTMODSEQ, and for each voicemail the UID of its copy
// and the flags both sides had at the last sync. A store that implements
// um.OutwardState and um.Leaser (memstore, boltstore, pgstore) keeps it,
// as a JSON blob of at most um.MaxOutwardState bytes (some ten thousand
// voicemails), so that whichever node syncs the mailbox next continues from
// it (see Clusters). On other stores it lives in the StateStore the host
// passes to New (FileState: a JSON file per mailbox, replaced atomically
// with write, fsync, rename and a directory fsync).
//
// There is no queue of pending operations. At every (re)connect, and after
// an overflow of its subscription, the worker compares three things: the
// um store, the state, and the server (every copy found by UID SEARCH
// HEADER X-Um-Message-Id and its flags). The difference is the work to
// do, so changes made on either side while the server, the network or the
// PBX was down are carried over in one pass when it returns, and a crash
// at any point loses nothing: an operation that was done but not recorded
// shows up as already done (both sides equal), one that was recorded but
// not done is impossible (the state is written after the operation), and
// one that was neither is still a difference. The only operation that is
// not naturally idempotent, APPEND, is made so by the header: the state is
// saved with Appending set before it, and every copy is searched for by
// its header before anything is appended again, so a lost answer, a
// timeout or a crash never leaves two copies (duplicates found anyway, for
// instance made by a user's restore, are removed, keeping the oldest).
//
// Failures end the connection; the worker reconnects after a backoff that
// doubles from Options.MinBackoff to Options.MaxBackoff, with jitter (see
// Reconnecting).
//
// # Reconnecting
//
// Workers whose Config.Addr is the same (compared without case) share what
// they learn about that server, so an outage ends for all of them when it
// ends for one, not when each one's backoff runs out:
//
//   - A transport failure (connection refused, reset or timed out, no
//     greeting, or the connection of a session that had synced lost) marks
//     the address down.
//     The first worker to see it becomes the address's prober and retries
//     every Options.ProbeInterval (default MinBackoff) instead of backing
//     off; the others back off as before. Failures where the server
//     answered (a refused login, a NO, a certificate that does not verify,
//     a response that does not parse) say nothing about the address and
//     make no prober, so a wrong password or a garbling server is never
//     retried faster than the backoff. Nor does a connection lost after
//     the login and before the first sync: a server that lets each worker
//     log in and then drops it is backed off by every worker, rather than
//     probed at ProbeInterval with every worker of the address woken by
//     each probe's login.
//   - When any worker of a down address logs in again, the address is up:
//     every worker of it sleeping in backoff is woken and reconnects after
//     a random delay of up to 2 ms per worker of the address (at most 2 s),
//     so a thousand mailboxes do not dial in the same millisecond. A worker
//     whose attempt then fails backs off (or probes) as before, and is woken
//     again by the next worker that gets in.
//   - A prober removed while the address is down hands the role to another
//     worker of the address, which retries at once.
//   - At most Options.MaxDials logins (connect, TLS, greeting,
//     authentication; default 32) are in progress to one address at a
//     time; the rest wait their turn in the engine, not in the server's
//     login processes.
//
// After a one-minute outage of a server with a thousand voice mailboxes,
// catch-up therefore takes about one ProbeInterval, two seconds of spread
// and the server's login rate, not up to a further minute of backoff.
//
// # Conflict rules
//
// The merge is per flag and three-way, against the flags of the last
// sync: a flag changed on one side takes that side's value. A flag has two
// values, so both sides cannot change it in different directions. Beyond
// that:
//
//   - Delete wins: a voicemail deleted on either side is deleted on both,
//     whatever the other side did to its flags meanwhile. A copy of a
//     message that is in um's Trash is moved to the server's Trash again
//     (the phone's delete wins over a restore on the server; undelete on
//     the phone brings the copy back, see the rules above).
//   - Unheard re-lights the lamp: when there is no common base (a copy
//     found again after a lost state file or a UIDVALIDITY change), the
//     message is heard only if both sides say so; \Deleted, \Flagged and
//     \Answered are set if either side has them.
//   - The store is authoritative for existence: a voicemail whose copy is
//     not found after a UIDVALIDITY change (the folder was deleted and
//     recreated) is appended again, never deleted on the phone.
//
// # UIDVALIDITY
//
// When the folder's UIDVALIDITY differs from the state's, every UID in the
// state is void. The worker keeps the flags as the merge base, finds the
// copies by their header, and associates them again; copies not found are
// appended.
//
// # Exclusivity
//
// Engine.Add claims the mailbox's delivery mode "imap-sync" with
// um.Service.ClaimDelivery: a mailbox forwarded by e-mail (package
// forward) cannot also sync, and Add fails with an error wrapping
// um.ErrModeConflict.
//
// # Clusters: one owner per mailbox
//
// Several nodes (um.Services with their own Options.Node) may share one
// store, pgstore's PostgreSQL, and every one of them may have the same
// mailbox added to its Engine: that is the way to configure a cluster, and
// the nodes see to it that one of them syncs it. The rules:
//
//   - One owner. A mailbox's worker syncs only while its node holds the
//     mailbox's lease of purpose "upstream" (Purpose) in the store
//     (um.Leaser, found through Unwrap as um.StoreAs finds it). The other
//     nodes' workers do nothing but ask for the lease about every third of
//     Options.LeaseTTL, and at the moment the holder's lease would expire;
//     they neither connect to the server nor read the mailbox.
//   - Renewal and its margin. The owner renews every third of LeaseTTL.
//     When renewals fail (the owner is cut from the database) it stops the
//     sync, closing its connection to the server at once, a fifth of
//     LeaseTTL before the lease could pass by its own clock, which starts
//     before the store's; only then may another node take over. A node that
//     stops (Engine.Remove, Engine.Close) releases the lease, and another
//     node takes over within a few milliseconds of its next request.
//   - Takeover. When the owner dies (kill -9, power, its database link
//     cut), its lease expires after at most LeaseTTL (default 15 s) and a
//     waiting node takes it at once (see BENCHMARKS.md for the measured
//     times). The new owner loads the state from the store, never from its
//     own memory, and starts with a full pass: every copy is found by its
//     header, so an APPEND the old owner made but whose UID it never saved
//     (its state says the outcome is unknown) is found, not made again, and
//     every change made meanwhile on either side is a difference that the
//     pass carries over.
//   - Fenced state. The state is written with the lease the worker holds
//     (um.OutwardState.PutState checks its Epoch in the same transaction),
//     so a node that was paused past its lease cannot overwrite its
//     successor's state: its write fails with um.ErrLeaseHeld and its sync
//     stops at once, before anything it would have done after the write
//     (an APPEND follows the write that marks it). The state is saved
//     before every APPEND and after every change on the server.
//   - What the owner is. Status.Owner names the owning node as this node
//     last saw it, and Status.Owning tells whether it is this one; Sync on
//     a node that does not own the mailbox fails with an error wrapping
//     um.ErrLeaseHeld naming the owner.
//
// On a store without um.Leaser every node that has a mailbox added syncs
// it, and its state lives in the StateStore given to New: configure each
// mailbox on one node only.
//
// The one gap that fencing cannot close is the server's own: an APPEND
// sent whole a moment before the owner stopped, which the server stores
// later than the margin, may be followed by the new owner's search that
// does not see it yet, and so by a second copy; the next pass finds two
// copies with the same header and removes the later one. LeaseTTL/5 is
// seconds by default, far longer than a server takes to store a message.
//
// # Status
//
// Engine.Status tells the host, per mailbox, whether the worker is
// connected, when both sides were last the same, how long the oldest change
// not yet carried over has waited, and the last error. Engine.Sync runs a
// full comparison at once and waits for it.
//
// # Caveats
//
//   - One IMAP connection per mailbox, from the node that owns it: the
//     server must allow as many from the PBX's addresses (Dovecot: mail_max_userip_connections is per user
//     and address; process and client limits of the imap service).
//   - Only INBOX of the voice mailbox is synced; user folders of the voice
//     mailbox and e-mail that IMAP clients of the embedded server append
//     stay local.
//   - An APPEND the server refuses (over quota) is retried with the
//     reconnect backoff until it succeeds; Status shows the error.
//   - A server without MOVE and UIDPLUS (older ones) costs more: a delete
//     is COPY to Trash and \Deleted, the \Deleted copy stays until the
//     user's client expunges, and a second copy in Trash is marked
//     \Deleted rather than expunged.
//   - A second copy in Trash that the user's client makes after the
//     engine's last look (a COPY within Trash, or a move of a copy its view
//     still shows after the engine moved it) stays until the next full
//     pass.
//   - Through a high-latency link every round trip counts: see
//     BENCHMARKS.md for what a deposit, a \Seen and a catch-up cost at
//     100 ms each way. An APPEND goes out with its message in one round
//     trip where the server offers LITERAL+ (go-imap's client waits for
//     the server's "+" before a message over 4 KiB; the connection guard
//     makes the literal non-synchronizing and answers that wait itself).
package upstream
