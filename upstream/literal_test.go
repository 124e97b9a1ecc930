package upstream

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

// TestGuardNonSyncLiteral runs go-imap's APPEND through the guard against
// a scripted server that answers the announcement of a synchronizing
// literal with "+" and nothing else: a message over 4 KiB to a server with
// LITERAL+ goes out as {N+} without waiting for the server, even while the
// server is in the middle of a response, and arrives intact; without
// LITERAL+ the literal stays synchronizing. A literal inside the message
// is data, never an announcement.
func TestGuardNonSyncLiteral(t *testing.T) {
	body := strings.Repeat("x", 5000) + "\r\nSubject: {9}\r\n" + strings.Repeat("y", 3000)
	tests := []struct {
		name     string
		caps     string
		plus     bool // what sendAppend asks for
		body     string
		wantPlus bool // the server sees {N+}
	}{
		{"large, LITERAL+", "IMAP4rev1 LITERAL+", true, body, true},
		{"large, not asked", "IMAP4rev1 LITERAL+", false, body, false},
		{"large, without LITERAL+", "IMAP4rev1", false, body, false},
		{"small, LITERAL+ (go-imap's own)", "IMAP4rev1 LITERAL+", true, "short {3}\r\n", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cc, sc := net.Pipe()
			defer cc.Close()
			defer sc.Close()
			got := make(chan string, 1)
			go scriptedAppendServer(t, sc, tc.caps, got)
			g := newGuard(cc, 1<<20, 1<<16)
			c := imapclient.New(g, nil)
			defer c.Close()
			if err := c.WaitGreeting(); err != nil {
				t.Fatal(err)
			}
			g.arm(5 * time.Second)
			g.plus.Store(tc.plus)
			cmd := c.Append("INBOX", int64(len(tc.body)), nil)
			g.plus.Store(false)
			if _, err := io.WriteString(cmd, tc.body); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Close(); err != nil {
				t.Fatal(err)
			}
			data, err := cmd.Wait()
			if err != nil {
				t.Fatalf("APPEND: %v", err)
			}
			if data.UID != 7 {
				t.Errorf("APPENDUID = %d, want 7", data.UID)
			}
			line, lit := splitAppend(<-got)
			if plus := strings.HasSuffix(line, "+}\r\n"); plus != tc.wantPlus {
				t.Errorf("announcement %q: non-synchronizing = %v, want %v", line, plus, tc.wantPlus)
			}
			if lit != tc.body {
				t.Errorf("literal of %d bytes differs from the %d sent", len(lit), len(tc.body))
			}
			if err := c.Noop().Wait(); err != nil {
				t.Errorf("NOOP after the APPEND: %v", err)
			}
		})
	}
}

func splitAppend(s string) (line, lit string) {
	i := strings.Index(s, "\r\n")
	return s[:i+2], s[i+2:]
}

// scriptedAppendServer greets with caps, sends half of an untagged
// response, reads one APPEND, sends the rest of the response (then "+"
// for a synchronizing literal), reads the literal and answers OK with an
// APPENDUID; then it answers one NOOP. It reports the command's line and
// literal.
func scriptedAppendServer(t *testing.T, conn net.Conn, caps string, got chan<- string) {
	br := bufio.NewReader(conn)
	fmt.Fprintf(conn, "* OK [CAPABILITY %s] ready\r\n", caps)
	io.WriteString(conn, "* 1 FETCH (FLAGS")
	line, err := br.ReadString('\n')
	if err != nil {
		t.Error(err)
		got <- ""
		return
	}
	var n int
	open := strings.LastIndexByte(line, '{')
	fmt.Sscanf(line[open+1:], "%d", &n)
	time.Sleep(20 * time.Millisecond) // the client's reader waits mid-response
	io.WriteString(conn, " (\\Seen))\r\n")
	if !strings.HasSuffix(line, "+}\r\n") {
		io.WriteString(conn, "+ go ahead\r\n")
	}
	lit := make([]byte, n+2)
	if _, err := io.ReadFull(br, lit); err != nil {
		t.Error(err)
	}
	tag, _, _ := strings.Cut(line, " ")
	fmt.Fprintf(conn, "%s OK [APPENDUID 1 7] done\r\n", tag)
	got <- line + string(bytes.TrimSuffix(lit, []byte("\r\n")))
	if line, err = br.ReadString('\n'); err == nil {
		tag, _, _ = strings.Cut(line, " ")
		fmt.Fprintf(conn, "%s OK noop\r\n", tag)
	}
}
