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
//	audio/<xx>/<key>   one file per larger content (the audio of a voicemail,
//	                   the whole message of a big e-mail a client appended),
//	                   named by a random 128-bit key, in 256 subdirectories by
//	                   its first byte
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
// # Durability
//
// Append reads the content. One of at most 16 KiB goes into the transaction
// that records the message, so it is durable exactly when the record is.
// A larger one goes into a content file, which Append fdatasyncs before it
// commits the transaction that records the message. bbolt's commit writes
// the changed pages, fdatasyncs, writes the meta page, and fdatasyncs again,
// so when Append returns, both the content and the record are on disk, and
// the record never reaches the disk before its content. A crash before the
// commit leaves at most a content file no message names; after Open a
// background sweep deletes such files. Remove and DeleteFolder delete
// content files after their commit; a crash in between again leaves work
// only for the sweep. A reader that fails, a canceled context or a full disk
// store nothing, and a failed commit never deletes a file a reader of the
// database could already see.
//
// The empty content files are made ahead of need by a goroutine that Open
// starts and Close stops: whenever fewer than 16 are ready it makes 32 in
// one subdirectory, with one fsync of that directory, and keeps them open.
// A deposit takes a file whose name is already durable and pays neither
// for creating it nor for a directory fsync; only when deposits outrun the
// refill and none is ready does one create its own file, with its own
// directory fsync. Unused files are deleted by Close, or by the sweep after
// a crash.
//
// Write transactions of concurrent callers are committed together: while one
// commit is syncing, the next gathers every transaction that arrives, and a
// transaction that fails is taken out and the rest run again. Deposits from
// many calls at once thus share the commit's two fdatasyncs. Read-only calls
// (List, Get, Folders, Open) never wait for writers.
//
// The tests check this by killing a child process depositing contents of
// a few bytes (kept in the database) to 480 KB with SIGKILL thirty times,
// and checking that every acknowledged deposit is there byte for byte and
// every listed message is whole; they fill a small tmpfs to check a full
// disk, and corrupt and truncate um.db.
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
// Large contents live in files rather than in bbolt because audio is most of
// the bytes and bbolt is a poor home for them: every commit rewrites the
// freelist, so a database of many gigabytes of freed and reused pages slows
// every commit; the file never shrinks; and reading a value out of a memory
// map means holding a transaction, which blocks the file from growing, or
// copying it. Measured on the development machine (a shared virtual disk
// whose speed drifts by 2x within minutes), a 480 KB (30-second) value
// committed to bbolt took 1.6 to 1.7 times as long as a plain file written
// and fsynced. The design above reaches a median 0.85 (0.59 to 1.12 over 12
// runs) of the plain file's throughput with one depositor and 0.74 (0.58 to
// 1.19) with eight; against plain files whose directory is fsynced too, as
// a new name needs to survive a crash, 0.92 and 0.76
// (BenchmarkDepositRatio, which alternates the kinds so all see the same
// disk). The gap is a fixed cost per commit: bbolt's two fdatasyncs and
// about 0.1 ms of processor time, about 0.45 ms in all, which weighs most
// when the disk is fast. Neither NoFreelistSync (one page fewer of about
// eleven per commit) nor syncing the content while the commit runs changed
// the ratio measurably: the disk serializes the flushes either way. Only a
// deposit that skips the bbolt commit (a log replayed on open) would close
// the gap. The two fdatasyncs of a commit are shared by concurrent deposits
// (group commit). Open hands out the content file itself, so playing a
// message streams from disk.
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
// database through one read transaction, then every content file it
// names, each verified against its size and checksum. It is consistent
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
// wrong reference count, a wrong entry in the ID index). Run it after a crash, a disk error or a restore.
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
//   - The directory must be on a local file system that honours fsync (not
//     NFS). Directory fsync, which makes new file names durable, is what
//     Linux and the BSDs provide; the store is built and tested on Linux.
package boltstore
