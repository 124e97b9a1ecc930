// Package imapserver is the embedded IMAP server of um: it serves the voice
// mailboxes of a *um.Service to mail clients, over go-imap v2's imapserver.
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
// Subscriptions are not kept: every existing folder counts as subscribed.
// LSUB, LIST (SUBSCRIBED) and RETURN (SUBSCRIBED) list every folder with
// \Subscribed; SUBSCRIBE of an existing folder and any UNSUBSCRIBE answer
// OK and change nothing (SUBSCRIBE of a missing folder is NO [NONEXISTENT]).
// Mail clients (Thunderbird, Outlook, Apple Mail) show only subscribed
// folders, and a fresh client that found none would hide the voicemail
// folders; state kept in memory would differ between cluster nodes and be
// lost on restart, so the same client would see folders come and go. A
// voice mailbox has few folders, all meant to be seen, so the one sound
// answer is that all are subscribed. A client's UNSUBSCRIBE therefore does
// not hide a folder (RFC 9051 expects it to; here it is a no-op).
//
// INBOX holds voicemail only. APPEND into INBOX, and COPY or MOVE of an
// appended e-mail into it, fail with NO [CANNOT]; APPEND into any other
// folder stores the message as an e-mail (um.Mailbox.Append). RENAME of
// INBOX fails with NO [CANNOT] too (RFC 3501 would move its messages away
// from the phone).
//
// # Flags
//
// \Seen is "heard", \Deleted, \Flagged, \Answered and \Draft are um's
// flags, and other flags are keywords (um.FlagOp.Keywords). A FETCH of a
// body section without PEEK marks the message heard through um, so the
// lamp (MWI) and the phone follow. \Recent is not kept: RECENT and STATUS
// RECENT are always 0 (IMAP4rev2 dropped \Recent; rev1 allows 0).
//
// # Voicemail as e-mail
//
// Voicemail is rendered by um.RenderEmail. FLAGS, INTERNALDATE and UID
// come from the session's view and render nothing, so a client's flag
// sync (FETCH 1:* (UID FLAGS)) is cheap. ENVELOPE, BODYSTRUCTURE,
// RFC822.SIZE, BODY.PEEK[HEADER] and BODY[1] (the text part) come from the
// rendering and never open the audio;
// BODY[], BODY[TEXT] and BODY[2] stream it, with partial fetches reading
// only the slice they need. E-mail appended by clients is served as stored.
// A rendering depends only on the message's immutable fields and the voice
// mailbox, so the server keeps the renderings, ENVELOPEs and BODYSTRUCTUREs
// it made in one LRU cache shared by all sessions, bounded by
// Options.RenderCacheBytes (4 MiB by default).
//
// # Live sync
//
// Every selected session subscribes to its voice mailbox (um.Subscribe,
// with itself as Source) and makes its own changes with um.WithSource, so
// it is not sent its own changes back. It keeps its own view of the
// selected folder: the UIDs in the order the client knows them, with their
// flags. Changes from the phone, other clients or other cluster nodes are
// applied to the view as they come and told to the client after each
// command and during IDLE: EXISTS for new messages, FETCH FLAGS for flag
// changes (a FLAGS response first when a new keyword appears), EXPUNGE for
// removals. EXPUNGE waits until the client sends a command that allows it
// (not FETCH, STORE or SEARCH), and each sequence number is computed from
// that client's view, so sequence numbers stay right for every client
// whatever the others expunge. A lost queue (um.ErrOverflow), an
// EventResync, or an event the view cannot account for reloads the folder
// and diffs it against the view. The last happens on a cluster, where a
// node's own change is announced at once and another node's a moment later:
// a deposit with a lower UID can be heard of after one with a higher UID,
// and the reload makes sure the client is told of both, in UID order. For
// the same reason the flags an event from another node (Change.Node not
// the local Service.Node) carries may be older than a local change already
// applied: the view takes the message's flags from the store instead (one
// read per such change: the message by ID, or the folder's list when the
// change has several events), and a message no longer there is removed;
// local events are applied as they come, being in commit order.
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
// go-imap's MailboxTracker and SessionTracker are not used.
//
// # Errors
//
// Errors from um become IMAP response codes in one place (errors.go):
// ErrNotFound is NONEXISTENT (TRYCREATE for the destination of COPY, MOVE
// or APPEND), ErrExists ALREADYEXISTS, ErrMailboxFull OVERQUOTA,
// ErrReserved, ErrNotVoice and ErrInvalid CANNOT, ErrClosed UNAVAILABLE.
// Every error a session method returns to go-imap is an IMAP response made
// there: an error no mapping knows is answered NO [SERVERBUG] and given to
// Options.Logf, and so is a panic in a session method, which is recovered.
// A failed connection is answered NO [UNAVAILABLE] (which the client will
// not read) and not logged.
//
// go-imap v2.0.0-beta.8 answers errors of its own parser that are not
// syntax errors (a folder name or LIST pattern that is not valid modified
// UTF-7, a command over 50 KiB) with NO [SERVERBUG], blaming the server.
// New changes that answer to BAD [CLIENTBUG] by patching an unexported
// go-imap variable (go:linkname; see conn.go). The patch is process-wide:
// other go-imap servers in the same process get the same answer for their
// unclassified errors. No error of this package's sessions reaches it, so
// real server bugs here still answer SERVERBUG. The patch is tied to the
// pinned go-imap version and must be re-checked at any upgrade.
//
// # Security and limits
//
//   - TLS 1.2 or newer. Before TLS the server announces LOGINDISABLED and
//     refuses LOGIN and AUTHENTICATE, unless Options.InsecureAuth.
//   - STARTTLS: bytes a client sent after STARTTLS and before the
//     handshake go into the handshake, which then fails: no command
//     pipelined behind STARTTLS is run.
//   - Failed logins are counted (Stats) and delayed, doubling per failure
//     from the same address; the third on a connection closes it.
//   - Before login a connection has Options.LoginTimeout in all, however
//     many commands it sends, and may send Options.MaxPreLoginBytes (128
//     KiB by default) before it is closed, which bounds the memory it can
//     make the server hold.
//   - After login the idle timeout is Options.IdleTimeout (at least 30
//     minutes, RFC 9051).
//   - Connections are capped in all, per remote address and per voice
//     mailbox. APPEND is capped at Options.AppendLimit (APPENDLIMIT).
//   - An APPEND is stored only after the CRLF that ends the command has
//     been read: go-imap v2.0.0-beta.8 would otherwise store a message
//     whose command it then drops without an answer. Such a connection is
//     closed with BYE.
//   - go-imap's DebugWriter is never set: it would log passwords.
//
// # Concurrency
//
// A Server is safe for concurrent use. Each connection runs on its own
// goroutine; IDLE adds one while it lasts. Options.Authenticate and
// Options.Logf are called from connection goroutines, concurrently.
//
// # Extensions
//
// IMAP4rev1 and IMAP4rev2, with STARTTLS, LITERAL+, ENABLE, IDLE, UNSELECT,
// NAMESPACE, UIDPLUS, MOVE, ESEARCH, SEARCHRES, SPECIAL-USE, LIST-EXTENDED,
// LIST-STATUS, STATUS=SIZE, CHILDREN and APPENDLIMIT.
package imapserver
