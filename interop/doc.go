// Package interop holds tests that drive mail clients um did not write
// against um's embedded IMAP server and check what the phone side and the
// lamp see afterwards.
//
// Python's imaplib, curl and mbsync talk to um started in-process on
// 127.0.0.1 on the embedded default store. Thunderbird, neomutt and
// offlineimap talk to the demo PBX (examples/pbx), built and run as its own
// process exactly as a user runs it, and the tests judge only what can be
// observed from outside: the demo's lamp lines and list answers,
// Thunderbird's IMAP protocol log (MOZ_LOG), neomutt's screen (through tmux),
// offlineimap's Maildir. Thunderbird runs on a private X display (Xvfb) with
// a small window manager (openbox) and is driven with xdotool, from a
// profile the test writes; each test stops every process it started.
//
// The clients are programs on the machine; a missing one fails the tests.
// Debian packages: python3, curl, isync, thunderbird, xvfb, xdotool,
// openbox, neomutt, tmux, offlineimap. scripts/test.sh installs them.
package interop
