package upstream_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/selfsigned"
	"github.com/embeddedum/um/upstream"
	"github.com/embeddedum/um/wav"
)

// TestStopWhileServerStopsReading: the server stops reading in the middle
// of the upload of a long voicemail, so the engine's write blocks on a full
// send buffer and the answer never comes. Status answers all the while,
// Remove and the engine's Close return, and the worker leaves no goroutine
// behind.
func TestStopWhileServerStopsReading(t *testing.T) {
	stops := []struct {
		name string
		stop func(e *env, mailbox string) error
	}{
		{"Remove", func(e *env, mailbox string) error { return e.eng.Remove(mailbox) }},
		{"Close", func(e *env, _ string) error { return e.eng.Close() }},
	}
	users := []string{"4000", "4001"}
	d := startDovecotPlain(t, users...)
	for i, tc := range stops {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			user := users[i]
			h := startHostile(t, d)
			opts := testOptions
			// The stop, not the command deadline, is what ends the session.
			opts.CommandTimeout = 10 * time.Minute
			e := newEnvOpts(t, d, opts, nil)
			mb, err := e.svc.EnsureMailbox(ctx, user)
			if err != nil {
				t.Fatal(err)
			}
			before := workerGoroutines()
			cfg := e.config(user, "")
			cfg.Addr, cfg.Security, cfg.TLSConfig = h.ln.Addr().String(), upstream.ImplicitTLS, h.cert.ClientConfig("localhost")
			if err := e.eng.Add(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			e.waitSynced(user)

			stalled := make(chan struct{})
			release := make(chan struct{})
			t.Cleanup(func() { close(release) })
			var once sync.Once
			stall := func(line string) {
				if _, rest, ok := strings.Cut(line, " "); ok && strings.HasPrefix(strings.ToUpper(rest), "APPEND ") {
					once.Do(func() { close(stalled) })
					<-release // nothing more is read from the engine
				}
			}
			h.before.Store(&stall)
			// Four minutes of audio, some 5 MB as mail: more than a loopback
			// connection's send buffer and the receive buffer behind it hold.
			long := um.Deposit{Audio: bytes.NewReader(wav.Tone(4 * time.Minute)), CallerNumber: "100", Duration: 4 * time.Minute}
			if _, err := mb.Deposit(ctx, long); err != nil {
				t.Fatal(err)
			}
			within(t, "the APPEND to reach the server", func() { <-stalled })
			eventuallyShow(t, "the upload blocked on a full send buffer", uploadBlocked, allStacks)

			within(t, "Status while the upload is blocked", func() {
				if st := e.eng.Status(user); !st.Configured || !st.Connected {
					t.Errorf("Status() while the upload is blocked = %+v, want configured and connected", st)
				}
			})
			// Status is asked for all through the stop: it must never wait
			// for the connection.
			asking, asked := make(chan struct{}), make(chan struct{})
			go func() {
				defer close(asked)
				for {
					if st := e.eng.Status(user); st.Mailbox != user {
						t.Errorf("Status().Mailbox = %q, want %q", st.Mailbox, user)
					}
					select {
					case <-asking:
						return
					default:
					}
				}
			}()
			within(t, tc.name, func() {
				if err := tc.stop(e, user); err != nil {
					t.Errorf("%s() = %v, want nil", tc.name, err)
				}
			})
			close(asking)
			within(t, "Status during the stop", func() { <-asked })
			eventuallyShow(t, "the worker's goroutines to end", func() bool { return workerGoroutines() <= before }, allStacks)
		})
	}
}

// TestPanicInTheMiddleOfAnAnswer: a bug met while the worker reads the
// answer to a UID FETCH, with more of the answer on its way, ends that
// session, not the worker: go-imap's reader, which waits for each message
// it hands over to be read, is let go. Status answers, the worker
// reconnects and syncs, Remove returns, and no goroutine of the session's
// client is left.
func TestPanicInTheMiddleOfAnAnswer(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	before := workerGoroutines()
	mb := e.sync("1001", "")
	for i := range 3 {
		deposit(t, mb, strconv.Itoa(i))
	}
	e.waitSynced("1001")

	var armed atomic.Bool
	var fetched atomic.Int32
	upstream.SetOnFetched(e.eng, func() {
		if !armed.Load() || fetched.Add(1) != 1 {
			return
		}
		// The next message's header is on its way: the bug strikes once
		// the client's reader waits for it to be read.
		for deadline := time.Now().Add(20 * time.Second); !readerHandingOver() && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		panic("a bug in the middle of an answer")
	})
	armed.Store(true)
	// A sync asked for is a full pass, which reads every copy's header.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := e.eng.Sync(ctx, "1001"); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("Sync() during the panic = %v, want an internal error", err)
	}
	if n := fetched.Load(); n == 0 {
		t.Fatalf("messages read of the answer = %d, want some", n)
	}
	within(t, "Status after the panic", func() { e.eng.Status("1001") })
	e.waitSynced("1001")
	if st := e.eng.Status("1001"); !st.Connected || st.LastError != nil || st.Messages != 3 {
		t.Errorf("Status() after the panic = %+v, want connected, no error, 3 messages", st)
	}
	within(t, "Remove", func() {
		if err := e.eng.Remove("1001"); err != nil {
			t.Errorf("Remove() = %v, want nil", err)
		}
	})
	eventuallyShow(t, "the worker's goroutines to end", func() bool { return workerGoroutines() <= before }, allStacks)
}

// TestCloseWhileTLSWriteBlocked: the server stops reading and sends a
// record that does not decrypt. TLS answers it with an alert, from the
// reading goroutine, whose write blocks for want of a reader, with no
// deadline (go-imap clears its own after each command), and holds the
// lock of TLS's output, which TLS's Close waits for to write its
// close_notify. The guard's Close returns all the same, and ends the
// blocked write. The connection is a pipe, which holds nothing unread: a
// send buffer the server has filled.
func TestCloseWhileTLSWriteBlocked(t *testing.T) {
	cert, err := selfsigned.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	cc, sc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	sconf := cert.ServerConfig()
	sconf.SessionTicketsDisabled = true // nothing more for the client to read after the handshake
	shook := make(chan error, 1)
	go func() { shook <- tls.Server(sc, sconf).Handshake() }()
	tc := tls.Client(cc, cert.ClientConfig("localhost"))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-shook; err != nil {
		t.Fatal(err)
	}
	g := upstream.NewGuard(tc)

	// An application data record of 32 bytes that no key decrypts; the
	// server reads nothing from now on.
	go sc.Write(append([]byte{23, 3, 3, 0, 32}, make([]byte, 32)...))
	read := make(chan error, 1)
	go func() {
		_, err := g.Read(make([]byte, 1024))
		read <- err
	}()
	eventuallyShow(t, "TLS's alert blocked on the server", func() bool { return blockedIn("crypto/tls.(*Conn).sendAlert") }, allStacks)

	within(t, "Close", func() { g.Close() })
	within(t, "the alert's write to end", func() {
		if err := <-read; err == nil {
			t.Errorf("Read() of a record that does not decrypt = nil error, want one")
		}
	})
}

// within runs f and fails the test when it has not returned after 20 s:
// a guard against a hang, not a measure of speed.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s has not returned after 20 s; goroutines:\n%s", what, allStacks())
	}
}

// allStacks is the stack of every goroutine.
func allStacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}

// goroutines is the stack of each goroutine.
func goroutines() []string { return strings.Split(allStacks(), "\n\n") }

// workerGoroutines counts the goroutines of the engine's workers and of
// their IMAP clients.
func workerGoroutines() int {
	n := 0
	for _, g := range goroutines() {
		if strings.Contains(g, "embeddedum/um/upstream.(*worker)") || strings.Contains(g, "go-imap/v2/imapclient.(*Client).read") {
			n++
		}
	}
	return n
}

// readerHandingOver tells whether the reader of a go-imap client waits
// for the message of a FETCH answer it hands over to be read.
func readerHandingOver() bool {
	for _, g := range goroutines() {
		if strings.Contains(g, "imapclient.(*Client).handleFetch") && (strings.Contains(g, "[chan receive") || strings.Contains(g, "[chan send")) {
			return true
		}
	}
	return false
}

// uploadBlocked tells whether a worker is blocked writing to its server.
func uploadBlocked() bool { return blockedIn("embeddedum/um/upstream.(*guard).Write") }

// blockedIn tells whether a goroutine is blocked on a write to a socket or
// a pipe within the function fn.
func blockedIn(fn string) bool {
	for _, g := range goroutines() {
		if strings.Contains(g, fn) && (strings.Contains(g, "waitWrite") || strings.Contains(g, "net.(*pipe).write")) {
			return true
		}
	}
	return false
}

// TestPanicInAnUnsolicitedFetch: go-imap hands a FETCH the server sends of
// its own (here, \Seen set by the user's other mail client) to a goroutine
// of its own, outside every command of the worker's. A bug met there ends
// the session, not the PBX, and the flag change still reaches the phone:
// the session after it reads the folder again.
func TestPanicInAnUnsolicitedFetch(t *testing.T) {
	d := startDovecot(t, "1001")
	e := newEnv(t, d)
	mb := e.sync("1001", "")
	m := deposit(t, mb, "+4930123456")
	e.waitSynced("1001")
	mc := newMailClient(t, d, "1001")
	uids := mc.find("INBOX", m.ID)
	if len(uids) != 1 {
		t.Fatalf("copies upstream = %d, want 1", len(uids))
	}

	var panicked atomic.Int32
	upstream.SetOnUnsolicited(e.eng, func() {
		if panicked.Add(1) == 1 {
			panic("a bug in an unsolicited FETCH")
		}
	})
	mc.store("INBOX", uids[0], imap.StoreFlagsAdd, imap.FlagSeen)
	eventually(t, "the unsolicited FETCH reaching the hook", func() bool { return panicked.Load() > 0 })
	eventually(t, "\\Seen from the other client on the phone", func() bool {
		got, err := mb.Message(context.Background(), m.ID)
		return err == nil && got.Heard()
	})
	e.waitSynced("1001")
	if st := e.eng.Status("1001"); !st.Connected || st.LastError != nil {
		t.Errorf("Status() after the panic = %+v, want connected with no error", st)
	}
}
