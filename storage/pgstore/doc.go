// Package pgstore is a um.Store on PostgreSQL for PBX clusters: several
// nodes, each with its own um.Service and IMAP server, share the voice
// mailboxes in one database, and a change made on one node reaches the IMAP
// sessions, sync workers and MWI dispatcher of the others.
//
//	store, err := pgstore.Open(ctx, "postgres://um@db.example.com/voicemail", &pgstore.Options{Node: "pbx-a"})
//	...
//	svc, err := um.New(store, &um.Options{Node: "pbx-a", MWI: sendNotify})
//
// Give every node its own Store (its own pool) and the same name in
// pgstore.Options.Node and um.Options.Node. One database holds one cluster:
// every Store on it shares the notification channel.
//
// # Schema
//
// Open creates the schema on an empty database and migrates an older one,
// inside one transaction under an advisory lock, so nodes starting together
// migrate once. Applied versions are rows of um_schema_version; a database
// at a version newer than this package knows fails Open with
// ErrSchemaTooNew rather than being misread. The tables:
//
//   - um_mailboxes (id, name): one row per voice mailbox. Mailboxes are never
//     deleted, so each Store caches name -> id.
//   - um_folders (id, mailbox_id, name, uidvalidity, uidnext): UIDVALIDITY
//     comes from the sequence um_uidvalidity, which starts at the Unix time
//     the schema was created, so a recreated folder, even in a rebuilt
//     database, gets a larger value. uidnext is the UID counter.
//   - um_messages: the metadata of each message, keyed by (mailbox_id, id)
//     with (folder_id, uid) unique. flags is the um.Flags bitmask, keywords a
//     text[] kept normalized by the SQL function um_keywords, times are Unix
//     nanoseconds so messages read back exactly.
//   - um_content (mailbox_id, message_id, seq, data bytea): the audio (or the
//     appended e-mail) in 256 KiB chunks, apart from the metadata, so List
//     and the MWI counts never read it. Open reads content up to 1 MiB in the
//     query that finds the message and streams larger content a chunk per
//     query; a message removed while it is read ends the stream with
//     um.ErrNotFound, never with short content.
//   - um_vanished (folder_id, modseq, uid): messages removed from a folder,
//     for um.ModSeqer.Vanished; they go with their folder.
//   - um_subscriptions (mailbox_id, name): subscribed folder names.
//   - um_delivery (mailbox_id, node, mode): the delivery mode of a mailbox
//     and the nodes that claimed it (um.DeliveryModes).
//   - um_leases (mailbox_id, purpose, holder, epoch, expires) and
//     um_outward_state (mailbox_id, purpose, data): the owner of a mailbox's
//     outward work and its state (um.Leaser, um.OutwardState).
//
// Names compare byte for byte (COLLATE "C"), as Go sorts them.
//
// # ModSeqs and limits
//
// Each mailbox's row counts its ModSeqs (um.ModSeqer, for IMAP CONDSTORE and
// QRESYNC). A writer takes the next value with UPDATE um_mailboxes SET
// modseq = modseq + 1 ... RETURNING after every other lock it needs, and
// holds the row until it commits: the ModSeqs of a mailbox become visible in
// the order they were handed out, on every node, and the lock closes no
// cycle of waits. A folder's HighestModSeq is computed when asked, from
// indexes on its messages' and removals' ModSeqs, so no writer locks the
// folder's row for it. The same row lock serializes the limit checks of
// um.Limiter: a deposit, copy or move out of Trash counts what the mailbox
// holds once it holds the row, so nodes depositing into a full mailbox at
// once are admitted one after another and never pass its limit together.
//
// # Concurrency across nodes
//
// Every method is one transaction. UIDs come from
// UPDATE um_folders SET uidnext = uidnext + n ... RETURNING in the
// transaction that adds the messages: the folder row stays locked until
// commit, so UIDs in a folder grow strictly, in commit order, when two nodes
// append at once. Append writes the content chunks first and takes that
// lock only for its last two statements, so a slow reader holds up no one.
// Flag changes are a single UPDATE that computes the new flags and keywords
// from the row as it is when locked (flags = flags | $add, for example), so
// concurrent changes from two nodes never lose one. IMAP EXPUNGE
// (um.Expunger) is a single DELETE ... WHERE flags has \Deleted ...
// RETURNING: a row another node is changing is checked again once that
// change commits, so a \Deleted cleared on another node meanwhile keeps the
// message. A deadlock or serialization failure is retried.
//
// # Delivery modes, leases and outward state
//
// A delivery mode claim (um.DeliveryModes) is a row per claiming node; a
// claim locks the mailbox's row, so two nodes claiming two modes at once end
// with one, and the rows outlive every node's restart until released. The
// lease of a mailbox's outward work (um.Leaser) is one row per purpose,
// taken, renewed or taken over by one INSERT ... ON CONFLICT DO UPDATE ...
// WHERE statement whose expiry is judged by the database's clock, so the
// nodes' clocks need not agree. A takeover increments the lease's epoch, and
// a state write (um.OutwardState) locks the lease row and checks holder,
// epoch and expiry in the statement that writes: a node that stalled past
// its lease cannot overwrite the state its successor keeps. That statement
// goes as one message (the simple protocol), so the lock is never held
// while the server waits on the node: a node whose link dies mid-write
// leaves no lock behind for the next holder's takeover to wait on.
//
// # A node gone silent
//
// A node can go silent in the middle of a transaction: its link cut by a
// partition or a dropped NAT entry, its VM frozen, its process stopped.
// Hearing nothing, PostgreSQL would keep the transaction open, and the row
// locks it holds (the mailbox's row, a folder's UID counter), until its TCP
// keepalive gives up, over two hours by Linux's defaults, and every other
// node's write that needs those rows (a deposit into the mailbox, a flag
// change, a delivery claim) would wait as long, with whatever waits on that
// write in turn. So every connection of the pool sets
// idle_in_transaction_session_timeout to Options.IdleInTransaction (default
// 10s: two thirds of the 15s LeaseTTL that packages upstream and forward
// default to, whose holder renews every third of it, so a dead holder's
// locks are gone by the time its lease can pass): the server rolls back a
// transaction that has waited that long on its node and ends the session,
// and the writes queued behind its locks go on. Nothing of the transaction
// stays, and the silent node's call fails, never acknowledged. The bound
// counts only the time the server waits on the node, not time spent running
// a statement. The store's own statements follow one another in
// milliseconds; the one other thing a transaction waits on is the content
// Append reads from its caller, which must be a finished recording (see
// um.Mailbox.Deposit; the IMAP server spools an APPEND first), and an Append
// whose reader stalls past the bound fails and stores nothing.
//
// Options.PeerTimeout (default 30s) bounds the rest of a dead peer: each
// session gets the server's TCP keepalive (tcp_keepalives_idle, _interval,
// _count) and tcp_user_timeout, so the sessions of a vanished node hold
// neither connection slots for hours nor, blocked sending to it, their
// locks; the node's own sockets get the same keepalive and, on Linux,
// TCP_USER_TIMEOUT, so a call waiting on a dead server or link fails
// within about that long even when its context has no deadline.
// tcp_user_timeout needs PostgreSQL 12 or newer.
//
// The server settings go as runtime parameters of the connection's
// startup message, which override ALTER ROLE and ALTER DATABASE settings.
// A connection string that sets one of them itself (as a parameter, or
// with -c in options) keeps its value; a negative option sets none of its
// own, leaving the server's configuration (and, for PeerTimeout, pgx's
// dialer). A pooler such as PgBouncer refuses startup parameters it does
// not know: behind one, set both options negative and the bounds for the
// role on the server (ALTER ROLE um SET idle_in_transaction_session_timeout
// = '10s').
//
// # The change feed
//
// The Store publishes each change itself, inside the transaction that makes
// it: the last statement before COMMIT is SELECT pg_notify('um_changes',
// payload), the payload being the change as JSON (mailbox, node, and the
// events with the messages' metadata). PostgreSQL delivers a notification
// when, and only when, its transaction commits, and delivers them in commit
// order. So a node that crashes after committing still announces the
// change, and a rolled-back change is never announced; publishing after
// commit from um (um.Publisher) would leave a window in which a crash loses
// the notification, and two nodes' publishes could arrive out of commit
// order. That is why Store does not implement um.Publisher: it builds the
// events itself (the same events um builds for its local subscribers).
//
// Watch (um.Watcher; um.New calls it) holds a connection of its own, named
// "um-watch/<node>" in pg_stat_activity, LISTENs on the channel and delivers,
// on one goroutine and in commit order, every change whose node is not its
// own and which another Store made. LISTEN needs a session of its own: point
// the Store at PostgreSQL itself or at a pooler in session mode, not at one in
// transaction mode (which also breaks the prepared statements pgx caches).
//
// # The resync rule
//
// Receivers get um.Event{Kind: um.EventResync} for a mailbox, and reload what
// they hold of it, whenever pgstore cannot say exactly what changed:
//
//   - A change whose notification would exceed 7900 bytes (PostgreSQL's limit
//     is 8000) is announced as a resync of its mailbox: a move of many
//     messages, or a long transcript.
//   - A lost notification connection: Watch notices it by the error of the
//     wait, or by a ping that fails after Options.PingInterval without
//     notifications (a dead peer says nothing). It reconnects with backoff,
//     LISTENs again, and then delivers a resync for every mailbox. Anything
//     committed after the new LISTEN arrives as usual; anything before is
//     covered by the reload.
//
// # The lamp is announced once
//
// In a cluster, each change is announced to the MWI hook once, by the node
// that made it, not once per node: um runs the hook only for changes its own
// Service committed, and changes that arrive through Watch (including
// resyncs) only refresh the node's view (see um.Options.Node). A deposit
// taken on node A lights the lamp through A's hook; the message heard on
// node B puts it out through B's hook, and A's Service.MWI then reports it
// off without A's hook firing. The host must therefore let every node send
// the NOTIFY for changes it makes (or forward them to the node holding the
// phone's subscription).
//
// # Backup
//
// Everything a Store keeps, metadata and audio alike, is in the database,
// so PostgreSQL's own tools back it up while the nodes keep serving:
//
//   - pg_dump (pg_dump -Fc -f voicemail.dump voicemail) reads the whole
//     database in one snapshot (a repeatable-read transaction), so the
//     dump is consistent however many deposits run meanwhile. Restore it
//     with pg_restore into an empty database (createdb, then pg_restore -d
//     voicemail voicemail.dump) and point the nodes at it. The audio is
//     bytea, so the dump is about the size of the audio.
//   - pg_basebackup (pg_basebackup -D /backup/base -X stream) copies the
//     whole cluster at the file level, online; with WAL archiving
//     (archive_mode, archive_command) it restores to any point in time.
//     This is the choice for large stores and for losing at most the last
//     seconds.
//
// A restored backup is older than what mail clients and forwarding have
// seen: the UIDs handed out after it was taken would be handed out again,
// to other messages. Before any node opens the restored database, give
// every folder a new UIDVALIDITY, so clients fetch again rather than show
// what they cached under a reused UID (boltstore.Restore does the same).
// The sequence first moves to the clock, past any value the lost database
// handed out after the backup:
//
//	SELECT setval('um_uidvalidity', greatest(last_value, extract(epoch FROM now())::bigint)) FROM um_uidvalidity;
//	UPDATE um_folders SET uidvalidity = nextval('um_uidvalidity');
//
// # Testing
//
// The package's tests start a throwaway PostgreSQL (initdb and postgres from
// PATH or /usr/lib/postgresql/*/bin, as the postgres user when run as root)
// with fsync off for speed; benchmarks start it with fsync on. Set UM_PG_DSN
// to use an existing server instead (its user needs CREATEDB).
package pgstore
