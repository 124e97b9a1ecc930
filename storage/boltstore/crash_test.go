package boltstore

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
)

// crashDirEnv, when set, makes the test binary a depositing child (see
// TestMain) instead of running tests.
const crashDirEnv = "BOLTSTORE_CRASH_CHILD_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// crashChild deposits messages from three goroutines until it is killed:
// 30-second messages, random sizes up to that, and small ones, half of them
// small enough to be kept in the database.
// After each Append returns (one goroutine's under a um.Durability, once
// its Wait has returned) it prints "ID SHA256 SIZE" on a line of its own.
// After every other one it flags the message under a um.Durability, as an
// IMAP client's STORE does, and prints "F ID" once Wait has returned.
// Each message's CallerName is its content's hash, so the parent can check
// messages that committed but were never acknowledged too.
func crashChild(dir string) {
	s, err := Open(dir, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: open:", err)
		os.Exit(2)
	}
	if err := s.CreateMailbox(ctx, "1001"); err != nil && !strings.Contains(err.Error(), "exists") {
		fmt.Fprintln(os.Stderr, "child: create mailbox:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	out := os.Stdout // unbuffered: a line is written before the next deposit
	for g := 0; g < 3; g++ {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(g)))
			for {
				size := rng.IntN(480000) + 1
				switch rng.IntN(4) {
				case 0:
					size = 480000 // a 30-second WAV
				case 1:
					size = rng.IntN(2*inlineMax) + 1 // an e-mail, mostly kept in the database
				}
				audio := make([]byte, size)
				for i := 0; i+8 <= len(audio); i += 8 {
					v := rng.Uint64()
					for j := 0; j < 8; j++ {
						audio[i+j] = byte(v >> (8 * j))
					}
				}
				sum := sha256.Sum256(audio)
				h := hex.EncodeToString(sum[:])
				// The third goroutine deposits as an IMAP APPEND does,
				// under a um.Durability, acknowledged once Wait returns.
				var dd um.Durability
				actx := ctx
				if g == 2 {
					actx = um.WithDurability(ctx, &dd)
				}
				m, err := s.Append(actx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox, CallerName: h, AudioType: "audio/wav"},
					strings.NewReader(string(audio)))
				if err == nil {
					err = dd.Wait(ctx)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "child: append:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(out, "%s %s %d\n", m.ID, h, m.Size)
				mu.Unlock()
				if rng.IntN(2) == 0 {
					var d um.Durability
					_, err := s.SetFlags(um.WithDurability(ctx, &d), "1001", []uuid.UUID{m.ID}, um.FlagOp{Mode: um.FlagsAdd, Flags: um.FlagFlagged})
					if err == nil {
						err = d.Wait(ctx)
					}
					if err != nil {
						fmt.Fprintln(os.Stderr, "child: flag:", err)
						os.Exit(2)
					}
					mu.Lock()
					fmt.Fprintf(out, "F %s\n", m.ID)
					mu.Unlock()
				}
			}
		}()
	}
	select {}
}

type acked struct {
	hash    string
	size    int64
	flagged bool // the flag change after it was acknowledged too
}

// TestCrashDurability kills a depositing child process with SIGKILL at
// random moments and checks, after each kill, that every acknowledged
// deposit is there whole, that every message the store lists is whole, and
// that every acknowledged flag change (applied before its sync, see
// committer.logged) is there.
func TestCrashDurability(t *testing.T) {
	const trials = 30
	dir := t.TempDir()
	var lastUID um.UID
	total, flags := 0, 0
	for trial := 0; trial < trials; trial++ {
		got := runAndKill(t, dir, time.Duration(rand.IntN(150))*time.Millisecond)
		total += len(got)

		s, err := Open(dir, nil)
		if err != nil {
			t.Fatalf("trial %d: Open() after kill = %v", trial, err)
		}
		msgs, err := s.List(ctx, "1001", um.Inbox)
		if err != nil {
			t.Fatalf("trial %d: List() = %v", trial, err)
		}
		listed := make(map[uuid.UUID]bool, len(msgs))
		ids := make([]uuid.UUID, 0, len(msgs))
		for _, m := range msgs {
			listed[m.ID] = true
			ids = append(ids, m.ID)
			if m.UID <= lastUID {
				t.Errorf("trial %d: message %s has UID %d, not above %d of an earlier run", trial, m.ID, m.UID, lastUID)
			}
			// Whole: the content opens, has the recorded size, and hashes
			// to what the child recorded, acknowledged or not.
			h, n := hashContent(t, s, m.ID)
			if n != m.Size || h != m.CallerName {
				t.Errorf("trial %d: message %s: content %d bytes hash %.8s, want %d bytes hash %.8s", trial, m.ID, n, h, m.Size, m.CallerName)
			}
			if a, ok := got[m.ID]; ok && (a.hash != h || a.size != n) {
				t.Errorf("trial %d: message %s differs from what was acknowledged", trial, m.ID)
			}
			if a := got[m.ID]; a.flagged {
				flags++
				if !m.Flags.Has(um.FlagFlagged) {
					t.Errorf("trial %d: message %s lost its acknowledged \\Flagged", trial, m.ID)
				}
			}
		}
		for id := range got {
			if !listed[id] {
				t.Errorf("trial %d: acknowledged message %s is missing after kill", trial, id)
			}
		}
		if len(msgs) > 0 {
			lastUID = msgs[len(msgs)-1].UID
		}
		// Start the next trial empty, so checking stays cheap.
		if len(ids) > 0 {
			if err := s.Remove(ctx, "1001", ids); err != nil {
				t.Fatalf("trial %d: Remove() = %v", trial, err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d trials, %d acknowledged deposits and %d flag changes checked", trials, total, flags)
	if total == 0 || flags == 0 {
		t.Fatal("no deposit or no flag change was acknowledged in any trial")
	}
	// Every file left by a kill mid-deposit is gone after a sweep.
	s := openAt(t, dir)
	<-s.sweepDone
	if n := countFiles(t, s); n != 0 {
		t.Errorf("content files after sweep of an empty store = %d, want 0", n)
	}
	if n := countSegments(t, s); n != 0 {
		t.Errorf("log segments after sweep of an empty store = %d, want 0", n)
	}
}

// runAndKill starts the child, lets it deposit for after past its first
// acknowledgement, kills it with SIGKILL and returns what it acknowledged.
func runAndKill(t *testing.T, dir string, after time.Duration) map[uuid.UUID]acked {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		r := bufio.NewReader(stdout)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return // a partial last line was never acknowledged
			}
			lines <- line
		}
	}()
	got := map[uuid.UUID]acked{}
	parse := func(line string) {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "F" {
			id, err := uuid.Parse(f[1])
			a, ok := got[id]
			if err != nil || !ok {
				t.Fatalf("child printed %q", line)
			}
			a.flagged = true
			got[id] = a
			return
		}
		if len(f) != 3 {
			t.Fatalf("child printed %q", line)
		}
		id, err := uuid.Parse(f[0])
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.ParseInt(f[2], 10, 64)
		got[id] = acked{hash: f[1], size: n}
	}
	select {
	case line, ok := <-lines:
		if !ok {
			cmd.Wait()
			t.Fatal("child exited before its first deposit")
		}
		parse(line)
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("child acknowledged no deposit in 20 s")
	}
	time.Sleep(after)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	for line := range lines {
		parse(line)
	}
	cmd.Wait()
	return got
}

func hashContent(t testing.TB, s *Store, id uuid.UUID) (string, int64) {
	t.Helper()
	rc, err := s.Open(ctx, "1001", id)
	if err != nil {
		t.Fatalf("Open(%s) = %v", id, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}
