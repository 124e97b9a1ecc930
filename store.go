package um

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Folder describes one folder of a voice mailbox as the store keeps it.
type Folder struct {
	Name string
	// UIDValidity is assigned when the folder is created and never changes
	// while the folder exists, across restarts too. A folder created again
	// under an old name gets a new, larger value.
	UIDValidity uint32
	// UIDNext is the UID the next message added to the folder will get.
	UIDNext UID
	// HighestModSeq is the largest ModSeq of any change in the folder (a
	// message added, its flags changed, a message removed), for CONDSTORE
	// (RFC 7162). Zero when the store does not implement ModSeqer.
	HighestModSeq uint64
}

// Store keeps voice mailboxes durably. um calls it from many goroutines at
// once; every method must be safe for concurrent use.
//
// The contract, checked by storage/storetest:
//   - Every method must return when ctx is done.
//   - A mailbox, folder or message that does not exist gives an error for
//     which errors.Is(err, ErrNotFound) is true; one that exists already,
//     ErrExists. Never nil, nil.
//   - Every mailbox has the folders INBOX and Trash from CreateMailbox on;
//     they cannot be renamed or deleted (ErrReserved).
//   - UIDs in a folder are assigned in strictly increasing order and never
//     reused while the folder's UIDValidity stays the same; List returns
//     messages in UID order.
//   - Each method is atomic: on error nothing it was asked to do is visible,
//     and content read from a failing reader is never stored.
//   - Messages the store returns are copies the caller may keep and change.
//
// Message IDs are chosen by um (random UUIDs) and are unique per mailbox;
// every operation on messages names them by ID, so a message keeps its
// identity when it moves between folders.
type Store interface {
	// CreateMailbox creates a voice mailbox with its INBOX and Trash folders.
	CreateMailbox(ctx context.Context, mailbox string) error
	// Mailboxes lists the names of all mailboxes, sorted.
	Mailboxes(ctx context.Context) ([]string, error)

	// Folders lists the folders of a mailbox, sorted by name.
	Folders(ctx context.Context, mailbox string) ([]Folder, error)
	// CreateFolder creates a user folder.
	CreateFolder(ctx context.Context, mailbox, folder string) (Folder, error)
	// RenameFolder renames a user folder and its messages keep their UIDs.
	RenameFolder(ctx context.Context, mailbox, from, to string) error
	// DeleteFolder deletes a user folder and the messages in it.
	DeleteFolder(ctx context.Context, mailbox, folder string) error

	// Append stores m in m.Folder with the content read from r until EOF. The
	// store assigns m.UID and sets m.Size to the number of bytes read; it
	// keeps every other field as given. It returns the stored message.
	Append(ctx context.Context, mailbox string, m Message, r io.Reader) (Message, error)
	// List returns the messages of a folder in UID order, without content.
	List(ctx context.Context, mailbox, folder string) ([]Message, error)
	// Get returns one message by ID.
	Get(ctx context.Context, mailbox string, id uuid.UUID) (Message, error)
	// Open returns the content of a message: the audio of a voicemail, the
	// whole RFC 5322 message of one appended by a mail client.
	Open(ctx context.Context, mailbox string, id uuid.UUID) (io.ReadCloser, error)
	// SetFlags applies op to each message atomically (two concurrent
	// SetFlags on one message never lose either change) and returns the
	// messages whose flags or keywords changed, in the order of ids.
	SetFlags(ctx context.Context, mailbox string, ids []uuid.UUID, op FlagOp) ([]Message, error)
	// Move moves messages to another folder: each gets the destination's
	// next UID and keeps its ID, flags and content. Added is set to now,
	// or kept when now is zero: um passes zero for every destination but
	// Trash, whose retention counts from Added, since IMAP keeps a message's
	// INTERNALDATE on COPY and MOVE (RFC 3501 6.4.7). It returns the moved
	// messages as they are now, in the order of ids. All move or none does.
	Move(ctx context.Context, mailbox string, ids []uuid.UUID, to string, now Time) ([]Message, error)
	// Copy copies messages into a folder under new IDs (newIDs[i] for
	// ids[i]) and returns the copies, in order. Added is treated as in Move.
	Copy(ctx context.Context, mailbox string, ids []uuid.UUID, to string, newIDs []uuid.UUID, now Time) ([]Message, error)
	// Remove deletes messages and their content for good.
	Remove(ctx context.Context, mailbox string, ids []uuid.UUID) error

	// Close releases the store's resources.
	Close() error
}

// Watcher is an optional Store interface for stores that several processes
// share (a PBX cluster on one database). Watch calls deliver, on one
// goroutine and in commit order per mailbox, for each change committed by
// another node than node, until ctx is done. When the store cannot know what
// changed (a lost notification connection), it delivers a change whose one
// event has Kind EventResync, so subscribers reload the mailbox; with an
// empty Mailbox, every mailbox. A store delivers such a change once it starts
// listening, since changes committed before that were missed.
//
// Stores that do not implement Watcher serve one process; um's own fan-out
// then sees every change.
type Watcher interface {
	Watch(ctx context.Context, node string, deliver func(Change)) error
}

// Publisher is an optional Store interface for stores shared by several
// nodes: um calls Publish after each commit so other nodes' Watch deliver
// the change. A store may instead publish within its transactions and not
// implement Publisher.
type Publisher interface {
	Publish(ctx context.Context, c Change) error
}

// Usage is what a mailbox holds outside Trash, for the limits in Options.
type Usage struct {
	Messages int
	Recorded time.Duration // summed Message.Duration
	Size     int64         // summed Message.Size, for the IMAP QUOTA STORAGE resource
}

// Counter is an optional Store interface for stores that can count without
// listing: um calls CountMWI after every change to INBOX and Usage before
// every deposit when limits are set. Without it, um lists the folders, which
// costs time in proportion to the messages a mailbox holds.
type Counter interface {
	// CountMWI returns the MWI counts of a mailbox (Mailbox set), as
	// MWIState documents them: voicemail (not Raw) in INBOX without
	// FlagDeleted.
	CountMWI(ctx context.Context, mailbox string) (MWIState, error)
	// Usage returns the messages, recorded time and content size outside
	// Trash.
	Usage(ctx context.Context, mailbox string) (Usage, error)
}

// Expunger is an optional Store interface for a removal that checks and
// removes in one atomic step, as IMAP EXPUNGE needs on a store shared by
// several nodes. Without it, Mailbox.Expunge lists the folder and removes
// what it found, and a flag cleared by another node in between is not seen.
type Expunger interface {
	// Expunge removes, atomically, the messages of folder that carry
	// FlagDeleted (only those whose UID is in uids, when uids is not nil)
	// and returns them in UID order. A folder that does not exist gives
	// ErrNotFound; nothing to remove gives no messages and no error.
	Expunge(ctx context.Context, mailbox, folder string, uids []UID) ([]Message, error)
}

// ModSeqer is an optional Store interface for IMAP CONDSTORE and QRESYNC
// (RFC 7162). A store that implements it keeps a modification sequence: a
// number that grows with every change. Each folder's changes get strictly
// increasing values (a store may share one counter among all folders of a
// mailbox); the messages one call changes may share a value. The store sets
// Message.ModSeq on every message it returns to the value of the message's
// last change in its folder (Append, a SetFlags that changed it, Move or Copy
// into the folder), and Folder.HighestModSeq to the largest value of any
// change in the folder, removals included, and to at least 1 from the
// folder's creation on (IMAP reads 0 as "no ModSeq"). A call that changes
// nothing (SetFlags setting flags a message has) leaves both as they were;
// RenameFolder keeps them, as it keeps UIDValidity. The values survive
// restarts and never go down while the folder's UIDValidity stays.
//
// Without it, imapserver does not offer CONDSTORE or QRESYNC.
type ModSeqer interface {
	// Vanished returns, in ascending order, the UIDs of messages removed from
	// folder by Remove, Expunge or a Move away, in a change whose ModSeq is
	// greater than since. A folder deleted and created again under its name
	// starts with none (it has a new UIDValidity). A store may forget old
	// removals: it then returns, with the UIDs it knows, the smallest since
	// it can answer exactly for (0 when it forgot nothing), and the caller
	// treats every UID it cannot account for as possibly vanished. A folder
	// that does not exist gives ErrNotFound.
	Vanished(ctx context.Context, mailbox, folder string, since uint64) (uids []UID, exactSince uint64, err error)
}

// FolderSubscriber is an optional Store interface that keeps IMAP folder
// subscriptions (SUBSCRIBE, LSUB, LIST (SUBSCRIBED)). A subscription names a
// folder, which need not exist (RFC 3501 6.3.6); INBOX and Trash are
// subscribed from CreateMailbox on. Subscriptions are kept by name:
// RenameFolder and DeleteFolder do not change them. A mailbox that does not
// exist gives ErrNotFound. Without it, imapserver reports every existing
// folder as subscribed and SUBSCRIBE changes nothing.
type FolderSubscriber interface {
	// SubscribeFolder subscribes a folder name; subscribing twice is no
	// error. A mailbox holds at most MaxSubscriptions: one more fails with
	// ErrInvalid, so a client cannot grow the store without bound.
	SubscribeFolder(ctx context.Context, mailbox, folder string) error
	// UnsubscribeFolder removes a subscription; one that does not exist
	// gives ErrNotFound.
	UnsubscribeFolder(ctx context.Context, mailbox, folder string) error
	// SubscribedFolders lists the subscribed folder names, sorted.
	SubscribedFolders(ctx context.Context, mailbox string) ([]string, error)
}

// Limits bound what a mailbox holds outside Trash, as Options.MaxMessages
// and Options.MaxRecordedTime set them. A zero field sets no bound.
type Limits struct {
	MaxMessages     int
	MaxRecordedTime time.Duration
}

// IsZero reports whether l bounds nothing.
func (l Limits) IsZero() bool { return l.MaxMessages <= 0 && l.MaxRecordedTime <= 0 }

// Admit returns nil when a mailbox that holds u may take n more messages of
// summed duration d outside Trash, and otherwise an error wrapping
// ErrMailboxFull that says which bound it would pass. Stores that implement
// Limiter call it inside their transactions, so that every store words the
// refusal alike. Adding nothing (n 0) is always admitted, even to a mailbox
// over a bound lowered since it filled.
func (l Limits) Admit(mailbox string, u Usage, n int, d time.Duration) error {
	if n <= 0 {
		return nil
	}
	if l.MaxMessages > 0 && u.Messages+n > l.MaxMessages {
		return fmt.Errorf("%w: %q holds %d messages, room for %d more, not %d", ErrMailboxFull, mailbox, u.Messages, max(l.MaxMessages-u.Messages, 0), n)
	}
	if l.MaxRecordedTime > 0 && u.Recorded+d > l.MaxRecordedTime {
		return fmt.Errorf("%w: %q would hold %v of recordings, over %v", ErrMailboxFull, mailbox, u.Recorded+d, l.MaxRecordedTime)
	}
	return nil
}

// Limiter is an optional Store interface for limits checked inside the
// store's transaction, so that the nodes of a cluster depositing into one
// mailbox at once can never pass them together. Each method is its Store
// counterpart that first counts what the mailbox holds outside Trash, as
// Counter.Usage does, within the same transaction, and fails with the error
// of lim.Admit (nothing changed) unless lim admits what the call adds
// outside Trash: the message of an Append to a folder other than Trash, the
// messages a Move takes out of Trash into another folder, every copy a Copy
// puts into a folder other than Trash. Concurrent calls on one mailbox,
// from any Store value on the same data, are checked one after another.
//
// Without it, um checks the limits before the store call under a lock of
// its own process; the nodes of a cluster may then pass a limit together.
type Limiter interface {
	// AppendLimited is Append within lim.
	AppendLimited(ctx context.Context, mailbox string, m Message, r io.Reader, lim Limits) (Message, error)
	// MoveLimited is Move within lim.
	MoveLimited(ctx context.Context, mailbox string, ids []uuid.UUID, to string, now Time, lim Limits) ([]Message, error)
	// CopyLimited is Copy within lim.
	CopyLimited(ctx context.Context, mailbox string, ids []uuid.UUID, to string, newIDs []uuid.UUID, now Time, lim Limits) ([]Message, error)
}

// DeliveryModes is an optional Store interface that keeps how each mailbox
// delivers its voicemail beyond the embedded IMAP server (a mode such as
// "imap-sync" or "email-forward"), so that the rule "one mode per mailbox"
// holds across restarts and across the nodes of a cluster. A claim names
// the node that holds it; a mailbox keeps its mode while any node holds
// it, including a node that stopped without releasing (a crash): the claim
// outlives the process by design, and is ended by ReleaseDelivery (a host
// ends the claim of a node gone for good by releasing it under that node's
// name, on the store itself).
//
// Without it, Service.ClaimDelivery keeps the modes in the memory of one
// Service: they hold in that process until it exits.
type DeliveryModes interface {
	// ClaimDelivery records that node delivers mailbox's voicemail in
	// mode. Claiming the mode the mailbox has already (by this node or
	// another) succeeds; a claim of any other mode fails with an error
	// wrapping ErrModeConflict whose text names the mode that holds and
	// its nodes. The check and the record are one atomic step. A mailbox
	// that does not exist gives ErrNotFound.
	ClaimDelivery(ctx context.Context, mailbox, mode, node string) error
	// ReleaseDelivery ends node's claim of mode; once no node holds it,
	// the mailbox has no mode. Releasing a claim that is not held changes
	// nothing and is no error.
	ReleaseDelivery(ctx context.Context, mailbox, mode, node string) error
	// DeliveryMode returns the mailbox's mode and the nodes that hold it,
	// sorted; "" and no nodes when it has none.
	DeliveryMode(ctx context.Context, mailbox string) (mode string, nodes []string, err error)
}

// Unwrapper is implemented by a Store that wraps another (for metrics or
// tracing). um looks for the optional interfaces (Watcher, Publisher,
// Counter, Expunger, ModSeqer, FolderSubscriber, ConditionalFlagger,
// Limiter, DeliveryModes, Leaser, OutwardState) on the wrapper first and then along the chain of Unwrap calls, as
// errors.As follows errors.Unwrap, so wrapping a store never silently turns
// off a capability that correctness depends on. Calls made through an
// interface found that way bypass the wrapper; a wrapper that must see them
// implements the interface itself.
type Unwrapper interface {
	Unwrap() Store
}

// StoreAs finds the first store in the chain that starts at s and follows
// Unwrapper that implements T, and reports whether there was one.
func StoreAs[T any](s Store) (T, bool) {
	for depth := 0; s != nil && depth < 100; depth++ {
		if t, ok := s.(T); ok {
			return t, true
		}
		u, ok := s.(Unwrapper)
		if !ok {
			break
		}
		s = u.Unwrap()
	}
	var zero T
	return zero, false
}

// ModeConflictError is the error of a delivery mode claim refused because
// the mailbox has another mode. It wraps ErrModeConflict.
type ModeConflictError struct {
	Mailbox string
	Mode    string   // the mode claimed
	Held    string   // the mode the mailbox has
	Nodes   []string // the nodes that hold Held, where the store knows them
}

// Error names the mailbox, the mode that holds and its nodes, and the mode
// refused.
func (e *ModeConflictError) Error() string {
	held := e.Held
	if len(e.Nodes) > 0 {
		held += " (held by node " + strings.Join(e.Nodes, ", ") + ")"
	}
	return fmt.Sprintf("%v: mailbox %q already uses %s, cannot also use %s", ErrModeConflict, e.Mailbox, held, e.Mode)
}

// Unwrap returns ErrModeConflict.
func (e *ModeConflictError) Unwrap() error { return ErrModeConflict }

// ErrLeaseHeld is returned when the lease a call needs is held by another
// node, or is no longer held by the one the call names (it expired, or
// another node took it over): the caller must stop the outward work it did
// under that lease.
var ErrLeaseHeld = errors.New("um: lease held by another node")

// MaxSubscriptions is how many folder names FolderSubscriber keeps per
// mailbox at most.
const MaxSubscriptions = 1000

// MaxOutwardState is the largest state blob OutwardState must keep.
const MaxOutwardState = 1 << 20

// Lease is one node's hold on a mailbox's outward work of one purpose
// ("upstream", "forward"), until Expires.
type Lease struct {
	Mailbox string
	Purpose string
	Holder  string // the node that holds it
	// Epoch grows each time the lease passes to a holder that did not hold
	// it unexpired, so a write under an old lease can be told apart (a
	// fencing token).
	Epoch   uint64
	Expires time.Time // by the store's clock (the database's, for pgstore)
}

// Leaser is an optional Store interface that gives each mailbox's outward
// work (syncing upstream, forwarding by e-mail) one owner at a time among
// the nodes that share the store. The owner renews its lease well within
// its time to live; when it dies, the lease expires and another node's
// AcquireLease takes it over, with a larger Epoch.
//
// Without it, every node that is configured for a mailbox's outward work
// does it.
type Leaser interface {
	// AcquireLease makes node the holder of the lease of mailbox and
	// purpose for ttl from now, when no other node holds it unexpired, or
	// renews node's own lease (same Epoch). When another node holds it, it
	// returns that lease and an error wrapping ErrLeaseHeld. A mailbox that
	// does not exist gives ErrNotFound.
	AcquireLease(ctx context.Context, mailbox, purpose, node string, ttl time.Duration) (Lease, error)
	// ReleaseLease ends l, when its holder still holds it with its Epoch,
	// so that another node can take the work over at once; otherwise it
	// changes nothing and is no error.
	ReleaseLease(ctx context.Context, l Lease) error
	// CurrentLease returns the unexpired lease of mailbox and purpose, or
	// ErrNotFound when nobody holds it.
	CurrentLease(ctx context.Context, mailbox, purpose string) (Lease, error)
}

// OutwardState is an optional Store interface that keeps the state of a
// mailbox's outward work (what the sync engine or the forwarder has done and
// still owes) in the store, so that the node that takes a lease over
// continues from where the last owner stopped. Writes are fenced by the
// lease: a node that lost its lease cannot overwrite its successor's state.
//
// Without it, the sync engine and the forwarder keep their state where
// their own options say (files on one node's disk).
type OutwardState interface {
	// GetState returns the state blob of mailbox and purpose, or ErrNotFound
	// when none was put.
	GetState(ctx context.Context, mailbox, purpose string) ([]byte, error)
	// PutState replaces the state of l's mailbox and purpose with data (at
	// most MaxOutwardState bytes, else ErrInvalid), atomically with a check
	// that l is still the current lease (same holder and Epoch, unexpired);
	// otherwise it fails with an error wrapping ErrLeaseHeld and keeps the
	// state as it was.
	PutState(ctx context.Context, l Lease, data []byte) error
	// DeleteState removes the state, fenced as PutState is. Deleting state
	// that does not exist is no error.
	DeleteState(ctx context.Context, l Lease) error
}

// ConditionalFlagger is an optional Store interface for IMAP STORE
// UNCHANGEDSINCE (RFC 7162 3.1.3), on stores that implement ModSeqer.
// Without it, Mailbox.SetFlagsIfUnchanged checks and stores under a lock of
// its own process, which other nodes do not take.
type ConditionalFlagger interface {
	// SetFlagsIfUnchanged is SetFlags for the messages of ids whose ModSeq
	// is at most since; each of the others is left alone and named in
	// modified, in the order of ids. The check and the change are one
	// atomic step per message: a change committed by another node in
	// between is seen. A message that does not exist fails the call with
	// ErrNotFound and changes nothing.
	SetFlagsIfUnchanged(ctx context.Context, mailbox string, ids []uuid.UUID, op FlagOp, since uint64) (changed []Message, modified []uuid.UUID, err error)
}
