// Package boltstore is um's embedded default Store: one directory on the
// PBX's own disk, no server, pure Go (no cgo). A deposit it acknowledges
// survives kill -9 and power loss, and it opens in the same time whether it
// holds ten mailboxes or ten thousand.
//
//	s, err := boltstore.Open("/var/lib/pbx/voicemail", nil)
//	if err != nil {
//		return err
//	}
//	defer s.Close()
//	svc, err := um.New(s, &um.Options{MWI: notify})
//
// # Layout
//
// The directory holds:
//
//	um.db              a bbolt database: mailboxes, folders, message metadata,
//	                   and the contents of up to 16 KiB
//	log/<number>       the log, in segments: each logged write, a deposit with its
//	                   record and content; a larger content (a voicemail's audio, a
//	                   big e-mail a client appended) stays there for good
//	audio/<xx>/<key>   one file per larger content that a store written
//	                   before the log, or a restored backup, holds; named by a
//	                   random 128-bit key, in 256 subdirectories by its first
//	                   byte
//
// In um.db each mailbox is a bucket holding its folders (name -> UIDVALIDITY,
// UIDNEXT), an index from message ID to (UIDVALIDITY, UID), and per folder a
// bucket from UID to the message record. The records are a compact binary
// encoding, so List reads one folder with one cursor pass in UID order and
// no random lookups: 10,000 messages list in 10 to 14 ms. A store-wide
// bucket counts the references to each content, which Copy shares, and
// another holds the small contents, apart from the records so that List and
// SetFlags never read or rewrite them.
// The store implements um.Counter: the MWI counts and the usage for limits
// read two bytes or two varints of each record and decode no strings.
// schema.go documents the keys.
//
// It also implements um.ModSeqer (a ModSeq counter per mailbox, each
// folder's HighestModSeq, and a log of removals keyed by UIDVALIDITY and
// ModSeq, so Vanished is one cursor range), um.FolderSubscriber,
// um.Limiter (limits checked inside the write transaction), um.DeliveryModes
// (kept in the database, so a claim holds across restarts), um.OutwardState
// (in the database) and um.Leaser. Its leases live in memory: Open locks
// the directory, so one process serves the store, and a lease orders only
// the Services of that process; a restart ends them with the process.
//
// UIDVALIDITY comes from a store-wide counter, started from the clock when
// the database is created and increased for every folder created, so a
// folder made again under an old name gets a new, larger value, and restarts
// change nothing.
//
// # Durability: the log
//
// Append reads the content into memory and hands the deposit to the
// committer, one goroutine that runs every write transaction. Deposits and
// the writes an IMAP client makes most (flag changes, moves, copies,
// removals, expunges) go through the log; the others (folders, mailboxes,
// delivery modes, leases, state) are bbolt transactions committed with
// bbolt's two fdatasyncs. Concurrent writes share a commit: while one runs,
// the next gathers every write that arrives, and one that fails is taken
// out and the rest run again. Read-only calls (List, Get, Folders, Open)
// never wait for writers.
//
// A deposit whose content is kept in the database (up to 16 KiB, below)
// needs no frame when it is in a synced transaction, and in a mixed
// workload that is the cheaper way: a batch that holds writes the log does
// not take commits its small deposits and logged writes in the same synced
// transaction (large deposits still go through the log first), and a lone
// small deposit right after such writes commits synced too, since logging
// it would begin an epoch (below) for one frame.
//
// The committer takes every write that arrived while it was busy and
// writes them as frames to the epoch's segments: a deposit's frame is a
// head with the mailbox, folder, limits, the message record, the content's
// CRC-32C and its place in the batch, the head's own CRC-32C, then the
// content; another write's is a head with its arguments. Deposits spread
// over up to four segments, the lanes, each written with one pwritev, in
// parallel, since a file takes one writer at a time; the other writes go
// to the first. Before writing, the committer allocates the blocks the
// frames will take (fallocate), so a full disk refuses a batch with
// nothing written, and after writing it starts the kernel's writeback of
// the frames' whole pages (sync_file_range), so that they travel to the
// disk while the batch is applied and the sync before it ends. It then
// applies the batch in one bbolt transaction committed without syncing
// (bbolt's NoSync), and hands the fdatasync of the segments to a goroutine
// of its own (bgSync), which flushes, in one go, every batch applied while
// it ran: group commit, without the committer waiting for the disk. Only when nothing else is queued and a
// caller is blocked on that very sync does the committer sync itself,
// sparing that caller two hand-offs. A caller hears of its write once its
// frames are synced, so when Append returns the deposit is on disk in the
// log; every reader already saw it in the database (read-your-writes, UIDs
// in the order of the log). A caller that put a um.Durability in its
// context (imapserver does, for each connection) hears once its write or
// deposit is applied and waits for the sync later, once for all it did: an
// IMAP client's pipelined APPENDs, STOREs and EXPUNGEs share one fdatasync
// and its responses go out after it. A write that fails in the transaction (a
// folder that does not exist, a full mailbox) leaves its frame in the log;
// replay fails it again the same way, since it applies the same frames in
// the same order to the same state. A content of up to 16 KiB goes into the
// database with the record; a larger one stays in its segment, and the
// database maps its key to (segment, offset, size), so Open returns that
// section of the segment file, which seeks and streams from disk like a
// file of its own.
//
// The log is cut into epochs, each in its own segments. An epoch starts
// from a state of um.db that a synced commit made durable: the first
// segment's first frame holds that state's transaction ID and a copy of its
// meta page, and the committer keeps a read transaction open on it, so that
// bbolt reuses none of its pages while the epoch's unsynced commits run.
// Since a commit of the epoch may reach the disk before its frames do, the
// epoch's first batch is synced before it is applied, with a second frame
// (kindEarly) that names the epoch's horizon: the highest transaction ID
// an unsynced commit of the epoch may take. The epoch ends with the next
// synced commit: a write the log does not take, or a checkpoint (an empty
// synced commit) after 256 writes, 64 MiB of segment, or at Close. Right
// before that commit a kindMark frame naming its transaction ID is
// written and synced. Half-way through an epoch a goroutine flushes
// um.db's pages, promising nothing, so that the synced commit which ends
// the epoch, while every writer waits, writes out only the second half's;
// and it does not wait for the background sync of the epoch's last batch,
// which it made durable itself: the segments close when that sync ends. The next logged write starts a new epoch in fresh
// segments (made ahead, eight at a time with one fsync of log/, so a
// segment's name is durable before its first frame is written; an epoch's
// other lanes start with a frame naming its base).
//
// Open, holding um.db's lock, reads the newest segment that starts with a
// whole base frame and the lanes that name it, each up to its first frame
// that is cut short or fails a checksum, and merges the frames by
// transaction and place; the first batch with a frame missing (torn by a
// crash, never acknowledged) ends the log. It reads um.db's two meta pages
// itself, without opening bbolt: um.db is opened as it is when the newest
// one's transaction ID is above the horizon and every unsynced one the
// epoch's frames claim, or at least the one a kindMark frame vouches for.
// Otherwise the epoch's commits may not have reached the disk, a power loss
// may have left meta pages that name pages never written, and um.db cannot
// be trusted past the base: Open writes the base's meta page back over
// both, fdatasyncs, opens bbolt on that state (whose pages were kept), and
// applies the frames again, each transaction as it was, then checkpoints.
// A crash during the replay leaves the same log and the same base, so the
// next Open replays again (replay is idempotent). Writes the log does not
// take are never undone or reordered by a replay: each ends the epoch with
// a synced commit that recovery trusts. The log's content ranges that
// removals free are punched out of their segment (FALLOC_FL_PUNCH_HOLE)
// only once no replay can read them: after their epoch ended and, for an
// epoch with early commits, after a later epoch's base frame is on disk,
// since recovery reads that epoch up to its kindMark frame. Content files
// of older stores go once their removal is durable. A segment this process
// wrote is deleted whole, not punched, once its epoch has ended and no
// content is in it, and a later epoch's base frame is on disk, since
// recovery reads no older segment: at once when it never held a content
// that stays in it (only other writes' frames, and small deposits', whose
// contents um.db holds), else when the last of its contents is released.
// So a store that runs for months keeps about as many segments as it has
// segments with contents, not one for every 256 writes. Segments of
// earlier processes go with Open's background sweep once no content is in
// them, as orphaned content files do.
//
// The committer keeps one more rule of bbolt's: growing the memory map
// waits for every read transaction, the epoch's too, which only the
// committer would end. It opens bbolt with a 256 MiB map (address space,
// not memory), and before each batch checks that the map surely has room
// for it; when it has not, it checkpoints first and commits that batch
// synced (deposits after their frames are synced), and bbolt grows the map
// with nothing pinned.
//
// If a commit without sync, a log write after its blocks were allocated,
// or a background fdatasync fails (an I/O error), the database no longer
// matches the log, and every later write fails (wrapping the cause) until
// the store is opened again, which replays; a write whose sync failed is
// never acknowledged. A batch refused for want of space fails its deposits
// and commits its other writes synced, so a removal can still free space.
//
// The tests check this by killing a child process depositing contents of a
// few bytes (kept in the database) to 480 KB and flagging every other one
// under a um.Durability, with SIGKILL thirty times, and checking that every
// acknowledged deposit and flag is there and every listed message is
// whole; by putting into a copy of um.db what a power loss can leave (the
// pages of the base under later meta pages, or later pages under the base's
// meta pages, with the last frames lost or not), tearing the log's tail,
// and stopping a replay midway; by recording the order of the syncs,
// commits and acknowledgements; and by filling a small tmpfs and
// corrupting and truncating um.db.
//
// # Why bbolt, and why content beside it
//
// bbolt (go.etcd.io/bbolt) is a single-file copy-on-write B+tree in pure Go,
// kept by the etcd maintainers, which etcd and Kubernetes run on. Every
// commit is ACID and fsynced; a reader sees a consistent snapshot and never
// blocks the writer; after a crash the last committed state is there with no
// recovery step, since the meta page alternates and is checksummed. It
// needs no server, no cgo and no configuration, which is what an embedded
// PBX wants. Its limit, one writer at a time, is what the group commit above
// works with.
//
// Large contents live outside bbolt because audio is most of the bytes and
// bbolt is a poor home for them: a database of many gigabytes of freed
// and reused pages makes every commit and every Open slower (the store
// does not write bbolt's freelist with each commit, which cost a flag
// change up to a sixth of its time, so Open rebuilds it from the pages in
// use); the file never shrinks; and reading a value out of a memory map means
// holding a transaction, which blocks the file from growing, or copying it.
// Measured on the development machine, a 480 KB (30-second) value committed
// to bbolt took 1.6 to 1.7 times as long as a plain file written and
// fsynced. Before the log, a deposit wrote its content to a file of its
// own, fdatasynced it, and committed bbolt with its two fdatasyncs: a
// median 0.85 and 0.74 of the plain file's throughput with one and eight
// depositors, a fixed cost per commit of about 0.45 ms. The log makes a
// deposit one sequential write and one fdatasync, shared by the deposits
// of a batch; BENCHMARKS.md has the numbers.
//
// Small contents are the other way round. An e-mail a client appends is
// typically a few kilobytes; as a file it cost a file creation (expensive
// under sandboxes such as gVisor, where it took 14-22% of an IMAP server's
// processor time under load), a directory entry and an fdatasync of its
// own. In bbolt it adds a few pages to the commit that records it anyway.
// Measured, alternating builds on the development machine: a 2 KB Append
// runs 2.1 to 2.8 times as fast (BenchmarkDeposit email2k, one depositor:
// 823-1031 -> 2114-2306 per second); under the IMAP load tool
// (bench/imapload, 50 clients) the server's commands per processor second
// rose from a median 3692 to 4708 (five alternated runs each), and file
// creation left its profile.
//
// # Backup, restore and check
//
// Store.Backup copies a running store into an empty directory: the
// database through one read transaction, then every content it names, each
// verified against its size and checksum; a content in a log segment is
// copied to a content file of its own, and the copy's database no longer
// maps it to a segment, so a backup holds no log. It is consistent
// while deposits and removals go on (the method documents the order that
// makes it so), and the copy is itself a store directory. A plain cp -r of
// the live directory is not a backup: it can copy the database after a
// removal has deleted a file the copied database still names. Restore
// copies a backup into an empty directory and checks the result; it never
// writes over a store.
//
// Store.Check reads every record and its content and reports each damaged
// message precisely: mailbox, folder, UID, the content file, and what is
// wrong (missing, wrong size, wrong checksum, unreadable, damaged record,
// wrong reference count, a wrong entry in the ID index); a content in a
// log segment is named by the segment and its offset. Run it after a
// crash, a disk error or a restore.
// Contents carry a CRC-32C from the transaction that records them;
// contents stored before checksums existed have none, and Check verifies
// only that they are there with their recorded size (CheckReport.Unverified
// counts them).
//
// # Schema
//
// The meta bucket holds the schema version. Migrations are a table in
// schema.go compiled into the program; Open runs the missing ones in one
// transaction. A database written by a newer schema makes Open fail with
// ErrSchemaTooNew and is left untouched.
//
// # Caveats
//
//   - One process at a time: Open takes a lock on um.db and fails with
//     ErrLocked while another process holds it. For a cluster of PBX nodes
//     use pgstore.
//   - Open checks the header and that the file is as long as its last
//     commit says, which catches garbage and truncated copies (ErrCorrupt),
//     but does not read every page: damage in the middle of the file shows
//     when the damaged page is read.
//   - Append reads a content into memory whole: at most 256 MiB, past which
//     it fails with um.ErrInvalid and stores nothing.
//   - A removed content's range of its log segment is freed once no replay
//     can read it (above), where the file system punches holes (Linux:
//     ext4, XFS, tmpfs); a segment goes whole once none is in it (above).
//   - The directory must be on a local file system that honours fsync (not
//     NFS). Directory fsync, which makes new file names durable, is what
//     Linux and the BSDs provide; the store is built and tested on Linux.
package boltstore
