// Package um gives a PBX written in Go voicemail that mail clients see over
// IMAP: embedded unified messaging.
package um
