// Package interop holds tests that drive mail clients um did not write
// (Python's imaplib, curl, mbsync) against um's embedded IMAP server, started
// in-process on 127.0.0.1 on the embedded default store, and check what the
// phone side (um.Mailbox) and the MWI hook see afterwards.
//
// The clients are programs on the machine; a missing one fails the tests.
// Debian packages: python3, curl, isync.
package interop
