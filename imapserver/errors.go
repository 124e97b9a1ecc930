package imapserver

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/embeddedum/um"
	"github.com/emersion/go-imap/v2"
)

// role says what a folder name is to a command, which decides how a missing
// folder is reported: a missing source is NONEXISTENT, a missing
// destination of COPY, MOVE or APPEND is TRYCREATE (RFC 3501 section 7.1).
type role uint8

const (
	roleSource role = iota
	roleDest
)

// errorMapping is the one table that turns um errors into IMAP responses.
// Every error um documents is here, so none falls through to go-imap's
// NO [SERVERBUG].
var errorMapping = []struct {
	err  error
	typ  imap.StatusResponseType
	code imap.ResponseCode
	text string
}{
	{um.ErrNotFound, imap.StatusResponseTypeNo, imap.ResponseCodeNonExistent, "No such folder or message"},
	{um.ErrExists, imap.StatusResponseTypeNo, imap.ResponseCodeAlreadyExists, "Folder exists already"},
	{um.ErrMailboxFull, imap.StatusResponseTypeNo, imap.ResponseCodeOverQuota, "Voice mailbox is full"},
	{um.ErrLimit, imap.StatusResponseTypeNo, imap.ResponseCodeLimit, "Implementation limit reached"},
	{um.ErrReserved, imap.StatusResponseTypeNo, imap.ResponseCodeCannot, "INBOX and Trash cannot be renamed or deleted"},
	{um.ErrNotVoice, imap.StatusResponseTypeNo, imap.ResponseCodeCannot, um.InboxRefusal},
	{um.ErrInvalid, imap.StatusResponseTypeNo, imap.ResponseCodeCannot, "Invalid name or argument"},
	{um.ErrBadAudio, imap.StatusResponseTypeNo, imap.ResponseCodeCannot, "Audio is not of its stated type"},
	{um.ErrModeConflict, imap.StatusResponseTypeNo, imap.ResponseCodeCannot, "Operation conflicts with the mailbox's delivery mode"},
	{um.ErrContentSize, imap.StatusResponseTypeNo, imap.ResponseCodeCorruption, "Stored message content is damaged"},
	{um.ErrOverflow, imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, "Temporarily unavailable, try again"},
	{um.ErrClosed, imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, "Service is shutting down"},
	{context.Canceled, imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, "Service is shutting down"},
	{context.DeadlineExceeded, imap.StatusResponseTypeNo, imap.ResponseCodeUnavailable, "Operation timed out, try again"},
}

// imapError returns the IMAP response for err. An *imap.Error passes
// through; an error no mapping knows becomes NO [SERVERBUG] and is logged,
// since it is a bug or an unexpected store failure.
func (s *Server) imapError(err error, r role) error {
	if err == nil {
		return nil
	}
	var ie *imap.Error
	if errors.As(err, &ie) {
		return ie
	}
	for _, m := range errorMapping {
		if !errors.Is(err, m.err) {
			continue
		}
		code, text := m.code, m.text
		var le *um.LimitError
		switch {
		case m.err == um.ErrNotFound && r == roleDest:
			code, text = imap.ResponseCodeTryCreate, "Destination folder does not exist"
		case m.err == um.ErrLimit && errors.As(err, &le):
			text = fmt.Sprintf("Limit reached: at most %d %s", le.Max, le.What)
		}
		return &imap.Error{Type: m.typ, Code: code, Text: text}
	}
	s.logf("imapserver: unexpected error: %v", err)
	return errServerBug()
}

// sessionError is the last word on an error a session method returns to
// go-imap (see session.guard): it is always nil or an *imap.Error. An
// error on a connection that failed (a write to a client gone) is no
// server bug; any other goes through imapError. So go-imap's fallback
// response for errors it cannot classify, which conn.go patches, is never
// reached from a session method.
func (sess *session) sessionError(err error) error {
	if err == nil {
		return nil
	}
	var ie *imap.Error
	if errors.As(err, &ie) {
		return ie
	}
	if sess.nc.failed.Load() || errors.Is(err, net.ErrClosed) {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeUnavailable, Text: "Connection failed"}
	}
	return sess.srv.imapError(err, roleSource)
}

// errServerBug answers an error no mapping knows, and a panic; the caller
// has logged it.
func errServerBug() error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeServerBug, Text: "Internal server error"}
}

func errCannot(text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot, Text: text}
}

func errClientBug(text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug, Text: text}
}

func errNonExistent(text string) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent, Text: text}
}
