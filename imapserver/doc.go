// Package imapserver is the embedded IMAP server of um: it serves the voice
// mailboxes of a *um.Service to mail clients. It has its own protocol
// engine (command parser, response encoder, dispatch, IDLE, STARTTLS,
// AUTHENTICATE); of go-imap v2 it uses only the value types of package imap.
//
// # Use
//
//	srv, err := imapserver.New(svc, &imapserver.Options{
//		Authenticate: func(ctx context.Context, user, pass string) (string, error) {
//			return pbx.CheckVoicemailPIN(ctx, user, pass) // returns the mailbox, e.g. "1001"
//		},
//		TLSConfig: tlsConfig,
//	})
//	go srv.Serve(ln143)    // plain, STARTTLS offered
//	go srv.ServeTLS(ln993) // implicit TLS
//	...
//	srv.Shutdown(ctx)      // BYE to every client once its command is done
//
// A session reaches only the voice mailbox Authenticate returned for it.
//
// # Mailboxes and folders
//
// um's words are kept apart from IMAP's: a mailbox is a user's voice
// mailbox (extension 1001); a folder is what IMAP calls a mailbox. Each
// voice mailbox has the folders INBOX and Trash (SPECIAL-USE \Trash), and
// clients may CREATE, RENAME and DELETE others. The hierarchy delimiter is
// "/".
//
// # Subscriptions
//
// With a store that keeps subscriptions (um.FolderSubscriber, found through
// Unwrap), SUBSCRIBE and UNSUBSCRIBE change them, and LSUB, LIST
// (SUBSCRIBED) and RETURN (SUBSCRIBED) show them; INBOX and Trash are
// subscribed from the mailbox's creation on. Only an existing folder can be
// subscribed (NO [NONEXISTENT] otherwise), so the list is as small as the
// mailbox whatever names a client sends; UNSUBSCRIBE of a name that is not
// subscribed answers OK. A subscription of a folder deleted since is listed
// with \NonExistent. Without such a store every existing folder counts as
// subscribed and SUBSCRIBE and UNSUBSCRIBE change nothing: a fresh client
// that found no subscription would hide the voicemail folders.
//
// LIST lists a level that exists only as the parent of folders ("A" of
// "A/B") as \NonExistent \HasChildren (RFC 5258); RECURSIVEMATCH gives
// CHILDINFO. RENAME moves a folder's children with it (RFC 3501 6.3.5).
//
// What a folder may hold is um's rule, not this package's (see um's doc on
// mail client habits): every APPEND, COPY and MOVE goes to um.Mailbox, and
// a refusal (um.ErrNotVoice, for an e-mail offered to INBOX) is answered
// NO [CANNOT] in the words of um.InboxRefusal. RENAME of INBOX fails with
// NO [CANNOT] (RFC 3501 would move its messages away from the phone).
//
// # Flags
//
// \Seen is "heard", \Deleted, \Flagged, \Answered and \Draft are um's
// flags, and other flags are keywords (um.FlagOp.Keywords). A FETCH of a
// body section without PEEK marks the message heard through um, so the
// lamp (MWI) and the phone follow.
//
// Keywords are kept by the store, held in every session's view and sent in
// FLAGS and in every FETCH FLAGS, so a client cannot invent them without
// end. STORE (+FLAGS or FLAGS) and APPEND bring into a folder at most
// MaxKeywords (128) distinct keywords, compared without regard to case,
// each at most MaxKeywordLength (64) bytes, and give no message more than
// MaxKeywords; past a limit the command is NO [LIMIT] (RFC 5530) and
// changes nothing, no message getting part of the keywords; an APPEND is
// refused before its literal is sent. Keywords the folder holds may
// always be set and removed. For the selected folder "holds" is what the
// session has seen in it since SELECT, as FLAGS lists it; for an APPEND
// into another folder the store's messages are read, when the APPEND has
// keywords. A full folder leaves \* out of PERMANENTFLAGS (RFC 3501 7.1),
// at SELECT and in an untagged OK when it fills up. COPY and MOVE are not
// refused for keywords: a copy brings at most MaxKeywords, and a move to
// Trash is a delete. Sessions that add keywords to one folder at once each
// check against what it held before, so it may end with MaxKeywords more
// per such session: past the limit, still bounded.
//
// # \Recent
//
// \Recent (RFC 3501 2.3.2) is kept as Dovecot keeps it: a message is
// recent in exactly one session, the first to SELECT its folder after the
// message arrived, or the one that has the folder selected when it arrives
// (a deposit, or a COPY, MOVE or APPEND into the folder, the session's own
// too). That session sees it in the RECENT count of SELECT and of each
// later EXISTS, as \Recent in FETCH and STORE answers, and in SEARCH
// RECENT, NEW and OLD; when it selects another folder or logs out, the
// message is recent for nobody. EXAMINE and STATUS RECENT show as recent
// what no session took yet, and leave it for the next SELECT; STATUS of the
// session's own selected folder counts its recent messages too. A session
// that enabled IMAP4rev2 is told no RECENT and no \Recent (RFC 9051 dropped
// both) and, like EXAMINE, takes nothing. No client can set or clear
// \Recent: STORE and APPEND ignore it.
//
// The Server keeps, per folder of a voice mailbox, only the highest UID a
// session took and the UIDVALIDITY it belongs to: a fixed-size record
// (about 24 bytes of heap) per folder selected since the Server started,
// whatever the number of messages or sessions, and FETCH, STORE and SEARCH find a
// message's \Recent in the session's view with one comparison. Taking is
// atomic, so however many sessions select a folder at once each message is
// given to one of them. RENAME keeps the record with the folder, and a
// folder created again under the name (a new UIDVALIDITY) starts afresh.
// The record lives in memory only, and only in one Server, so:
//
//   - After the Server starts, the first session to select a folder gets
//     every message in it as recent, as Dovecot does with in-memory
//     indexes; a host runs one Server per Service (for both ports) so that
//     all its sessions share the record.
//   - On a cluster each node keeps its own record: a message is recent in
//     one session on each node whose sessions select its folder. A client
//     that reconnects to another node sees as recent once more what it saw
//     as recent on the first, and sessions on different nodes may both be
//     given a new message. A message another node announces late, under a
//     UID below one this node's sessions already took, is recent in no
//     session of this node.
//
// # Voicemail as e-mail
//
// Voicemail is rendered by um.RenderEmail. FLAGS, INTERNALDATE and UID
// come from the session's view and render nothing, so a client's flag
// sync (FETCH 1:* (UID FLAGS)) is cheap. ENVELOPE, BODYSTRUCTURE,
// RFC822.SIZE, BODY.PEEK[HEADER] and BODY[1] (the text part) come from the
// rendering and never open the audio;
// BODY[], BODY[TEXT] and BODY[2] stream it, with partial fetches reading
// only the slice they need. E-mail appended by clients is served as stored:
// its header is read alone for ENVELOPE, HEADER and TEXT, and a part
// section or BODYSTRUCTURE parses the message once into where each part
// lies, so later sections are byte ranges read from the store.
// A rendering depends only on the message's immutable fields and the voice
// mailbox, so the server keeps the renderings, ENVELOPEs, BODYSTRUCTUREs
// and e-mail headers and part offsets it made in one LRU cache shared by
// all sessions, bounded by Options.RenderCacheBytes (3 MiB by default).
//
// # Live sync
//
// Every selected session subscribes to its voice mailbox (um.Subscribe,
// with a value of its own as Source) and makes its own changes with
// um.WithSource and that value, so it is not sent its own changes back. It
// keeps its own view of the selected folder: the UIDs in the order the
// client knows them, with their flags. Changes from the phone, other
// clients or other cluster nodes are applied to the view as they come and
// told to the client after each command and during IDLE: EXISTS for new
// messages, FETCH FLAGS for flag changes (a FLAGS response first when a new
// keyword appears), EXPUNGE for removals. EXPUNGE waits until the client
// sends a command that allows it (not FETCH, STORE or SEARCH), and each
// sequence number is computed from that client's view, so sequence numbers
// stay right for every client whatever the others expunge. A lost queue
// (um.ErrOverflow), an EventResync, or an event the view cannot account for
// reloads the folder and diffs it against the view. The last happens on a
// cluster, where a node's own change is announced at once and another
// node's a moment later: a deposit with a lower UID can be heard of after
// one with a higher UID, and the reload makes sure the client is told of
// both, in UID order. For the same reason the flags an event from another
// node (Change.Node not the local Service.Node) carries may be older than a
// local change already applied: the view takes the message's flags from the
// store instead (one read per such change: the message by ID, or the
// folder's list when the change has several events), and a message no
// longer there is removed; local events are applied as they come, being in
// commit order.
//
// EXPUNGE, UID EXPUNGE and CLOSE remove through um.Mailbox.Expunge, which
// checks \Deleted under the mailbox lock: a message the phone undeleted or
// moved meanwhile stays, and the client gets EXPUNGE only for what was
// removed.
//
// When another session deletes the selected folder or renames it away, the
// client is told that every message of it was expunged (RFC 9051 leaves the
// choice to the server; this keeps the connection), and later FETCH, STORE,
// SEARCH, COPY and MOVE get NO [NONEXISTENT] until it selects another
// folder. A folder created again under the name is another folder, with a
// new UIDVALIDITY, and never feeds the old selection.
//
// # Errors
//
// Errors from um become IMAP response codes in one place (errors.go):
// ErrNotFound is NONEXISTENT (TRYCREATE for the destination of COPY, MOVE
// or APPEND), ErrExists ALREADYEXISTS, ErrMailboxFull OVERQUOTA,
// ErrReserved, ErrNotVoice and ErrInvalid CANNOT, ErrLimit LIMIT (its
// text says the limit), ErrClosed UNAVAILABLE.
// Every error a command gets is an IMAP response made there: an error no
// mapping knows is answered NO [SERVERBUG] and logged at Error, and so is
// a panic in a command, which is recovered. A failed connection is
// answered NO [UNAVAILABLE] (which the client will not read) and logged at
// Debug only, as are all client faults: resets, bad TLS records, a first
// record that is not TLS, refused commands.
//
// # Protocol engine
//
// Each connection reads one command at a time. The command line, literals
// aside, may be 64 KiB; a string literal 64 KiB (1 KiB before login);
// lists nest only where the grammar has them, and SEARCH criteria nest at
// most 100 deep and hold at most 500 keys. What passes a budget gets a BAD at once, before
// anything is run or allocated for it. A literal the server refuses
// before reading it (too large, a folder that does not exist, a command
// that does not parse before it) is answered at once: a synchronizing one
// is never asked for, a non-synchronizing one (LITERAL+) is read and
// dropped when it is at most 1 MiB, and otherwise the connection is closed.
// Literal content is never parsed as commands. A LOGIN announcing a 100 MB
// literal is answered NO [TOOBIG] at once.
//
// SEARCH reads each message's text at most once per command, however many
// keys ask for it, and stops when its client hangs up: a goroutine watches
// the connection while it runs and cancels the connection's context.
//
// # Security and limits
//
//   - TLS 1.2 or newer, and TLS 1.2 with AEAD cipher suites only. Before
//     TLS the server announces LOGINDISABLED and refuses LOGIN and
//     AUTHENTICATE, unless Options.InsecureAuth.
//   - STARTTLS: bytes a client sent after STARTTLS and before the
//     handshake are dropped: no command pipelined behind STARTTLS is run.
//   - A client that opens the plain port with a TLS ClientHello gets
//     implicit TLS there (the greeting waits 50 ms for such a client):
//     Thunderbird's "Add Security Exception" fetches the certificate so.
//   - Failed logins are counted (Stats) and penalized in the manner of
//     Dovecot's auth penalty, per remote address (an IPv6 /64 as one) and
//     per account: the delay before the answer doubles with each failure
//     of either within 15 minutes, up to 16 times
//     Options.LoginFailureDelay, and the logins of one account are checked
//     one at a time, so guesses spread over many addresses are as slow as
//     guesses from one. The third failure on
//     a connection closes it.
//   - Before login a connection has Options.LoginTimeout in all, however
//     many commands it sends, and may send Options.MaxPreLoginBytes (128
//     KiB by default) before it is closed, which bounds the memory it can
//     make the server hold.
//   - After login the idle timeout is Options.IdleTimeout (at least 30
//     minutes, RFC 9051).
//   - Connections are capped in all, per remote address (an IPv6 peer's
//     /64 counts as one address) and per voice mailbox. APPEND is capped at Options.AppendLimit (APPENDLIMIT).
//   - CREATE is capped by um.Options.MaxFolders (500 user folders by
//     default), keywords by MaxKeywords and MaxKeywordLength (see Flags);
//     both answer NO [LIMIT].
//   - An APPEND is stored only after the CRLF that ends the command has
//     been read; a connection whose APPEND literal is not followed by it
//     is closed with BYE, and nothing is stored.
//   - No log record holds a password or message content.
//
// # Concurrency
//
// A Server is safe for concurrent use. Each connection runs on its own
// goroutine, and IDLE waits on it too: a change to the selected folder
// interrupts the connection's read (by its deadline), so the session's
// view is used by the connection's goroutine only and updates told during
// IDLE never race the end of it. While a connection waits for its client
// it holds no read or write buffer (they are pooled), so an idling client
// costs about 30 KiB, most of it TLS state and the goroutine's stack. A
// long SEARCH adds a goroutine that watches for a hang-up.
// Options.Authenticate and Options.Logger are called from connection
// goroutines, concurrently.
//
// Commands a client pipelines run back to back. Each connection gives the
// store a um.Durability, so a store that can (boltstore) applies a STORE,
// COPY, MOVE or EXPUNGE and returns before it is durable: the next
// command runs at once, and nothing reaches the client, neither the OK nor
// any later response, until every change the connection made is durable.
// A pipeline of writes so shares one sync. When a change cannot be made
// durable the connection is closed without its OK and the fault logged at
// Error, as a crash would leave it. Other sessions and the phone see a
// change as soon as it is applied.
//
// # Extensions
//
// IMAP4rev1 and IMAP4rev2, with STARTTLS, LITERAL+, SASL-IR (AUTHENTICATE
// PLAIN), ID (RFC 2971), ENABLE, IDLE, UNSELECT, NAMESPACE, UIDPLUS, MOVE,
// ESEARCH, SEARCHRES, SPECIAL-USE, LIST-EXTENDED, LIST-STATUS, STATUS=SIZE,
// CHILDREN, BINARY, APPENDLIMIT and QUOTA (RFC 9208: the voice mailbox is
// the quota root "", MESSAGE counts what it holds outside Trash against
// um.Options.MaxMessages, STORAGE the size of those messages in KiB against
// MaxMessages times AppendLimit; an APPEND or deposit over the limit is NO
// [OVERQUOTA]). With a store that keeps modification sequences
// (um.ModSeqer, found through Unwrap) also CONDSTORE and QRESYNC (RFC
// 7162): HIGHESTMODSEQ, MODSEQ, FETCH CHANGEDSINCE, STORE UNCHANGEDSINCE
// (MODIFIED), SEARCH MODSEQ, SELECT QRESYNC with VANISHED (EARLIER), and
// VANISHED instead of EXPUNGE once QRESYNC is enabled. STORE
// UNCHANGEDSINCE checks and changes in one step of the store
// (um.Mailbox.SetFlagsIfUnchanged), so a change another session or node
// committed after the session's last sync is a conflict too, named in
// MODIFIED.
//
// A part APPENDed as a binary literal (RFC 3516) with NUL bytes in it is
// stored in base64, so BODY[] never sends a NUL; BINARY[] decodes it.
//
// COPY and MOVE keep INTERNALDATE (RFC 3501 6.4.7), except into Trash,
// whose retention counts from the time a message arrived there. Known gap:
// a copy of a voicemail is rendered under its own new ID, so its Message-ID
// and X-Um-Message-Id differ from the original's.
package imapserver
