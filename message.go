package um

import (
	"io"
	"time"

	"github.com/google/uuid"
)

// Time is time.Time; the alias keeps Store signatures short.
type Time = time.Time

// UID is an IMAP unique identifier of a message within one folder.
type UID uint32

// Message is a voice message (or, in user folders, an e-mail a mail client
// appended) as um and its store know it. The audio is not part of it: open it
// with Mailbox.OpenAudio.
type Message struct {
	ID     uuid.UUID // stable across folders and restarts
	Folder string
	UID    UID // in Folder; a move gives a new one

	Flags    Flags
	Keywords []string // sorted IMAP keywords, such as $Label1
	Urgent   bool     // set at deposit by the caller's choice

	CallerNumber string        // as the PBX received it, e.g. +4930123456
	CallerName   string        // display name, may be empty
	Time         time.Time     // when the message was recorded
	Duration     time.Duration // length of the recording
	AudioType    string        // MIME type of the audio, e.g. audio/wav
	Transcript   string        // text of the message, where the host has one

	// Size is the number of content bytes: the audio of a voicemail, the
	// whole message of an e-mail (Raw).
	Size int64
	// Added is when the message arrived in its folder (IMAP INTERNALDATE for
	// e-mail; Trash retention counts from it).
	Added time.Time
	// Raw is true for a message a mail client appended: its content is a
	// whole RFC 5322 message and the voicemail fields are empty.
	Raw bool
	// ModSeq is the modification sequence of the message's last change in
	// its folder, kept by stores that implement ModSeqer; zero otherwise.
	ModSeq uint64
}

// Heard reports whether the message was played (IMAP \Seen).
func (m *Message) Heard() bool { return m.Flags.Has(FlagHeard) }

// Deposit is a finished recording the PBX hands to um.
type Deposit struct {
	// Audio is read to EOF; a read error fails the deposit and stores
	// nothing. Required. It should be at hand (a file, a buffer): a store
	// may hold locks while it reads, and bounds how long a read may stall
	// (storage/pgstore's Options.IdleInTransaction, 10 s by default), so a
	// reader that waits on a network may fail the deposit.
	Audio        io.Reader
	AudioType    string // media type, audio/*; "audio/wav" when empty (see Mailbox.Deposit)
	CallerNumber string
	CallerName   string
	Time         time.Time     // when the call came in; now when zero
	Duration     time.Duration // length of the recording; must not be negative; zero measures a WAV (see Mailbox.Deposit)
	Urgent       bool
	Transcript   string
}

// Clone returns a deep copy of m.
func (m Message) Clone() Message {
	if m.Keywords != nil {
		m.Keywords = append([]string(nil), m.Keywords...)
	}
	return m
}
