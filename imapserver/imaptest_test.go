package imapserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/internal/loopback"
	"github.com/embeddedum/um/storage/memstore"
)

// imaptestBinary returns the path of Dovecot's imaptest: $IMAPTEST, or
// what the build script beside the project builds. A missing tool fails
// the test: a compliance run that did not run is no pass.
func imaptestBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("IMAPTEST"); p != "" {
		return p
	}
	script, _ := filepath.Abs("../../shared/tools/imaptest/build.sh")
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("imaptest: set IMAPTEST or provide %s: %v", script, err)
	}
	out, err := exec.Command(script).Output()
	if err != nil {
		t.Fatalf("imaptest build: %v", err)
	}
	lines := strings.Fields(string(out))
	if len(lines) == 0 {
		t.Fatal("imaptest build printed no path")
	}
	return lines[len(lines)-1]
}

// imaptestServer serves a fresh memstore in which every user name with
// the password "pass" is a voice mailbox of its own, created at first
// login with a folder "stress", on a plain loopback port that allows LOGIN (as imaptest needs).
func imaptestServer(t testing.TB) string {
	t.Helper()
	svc, err := um.New(memstore.New(), &um.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(svc, &Options{
		Authenticate: func(ctx context.Context, user, pass string) (string, error) {
			if pass != "pass" {
				return "", errors.New("bad password")
			}
			mb, err := svc.EnsureMailbox(ctx, user)
			if err != nil {
				return "", err
			}
			// The folder the stress mode appends to and works in.
			if _, err := mb.CreateFolder(ctx, "stress"); err != nil && !errors.Is(err, um.ErrExists) {
				return "", err
			}
			return user, nil
		},
		InsecureAuth:      true,
		LoginFailureDelay: -1,
		MaxConnsPerIP:     -1,
		MaxConnsPerUser:   -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := loopback.Serve(srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Close()
		l.Wait()
		svc.Close()
	})
	return l.PlainAddr
}

var imaptestResult = regexp.MustCompile(`(\d+) test groups: (\d+) failed, (\d+) skipped due to missing capabilities\s+base protocol: (\d+)/(\d+) individual commands failed\s+extensions: (\d+)/(\d+) individual commands failed`)

// imaptestGroup is the outcome of one scripted group.
type imaptestGroup struct {
	name             string
	skipped          bool
	failed, commands int
	output           string
}

func runImaptestGroup(t *testing.T, bin, addr, dir, group string) imaptestGroup {
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	user := fmt.Sprintf("u%d", time.Now().UnixNano())
	cmd := exec.CommandContext(ctx, bin, "host="+host, "port="+port, "user="+user, "user2="+user+"b", "pass=pass",
		"box=imaptest", "test="+filepath.Join(dir, group))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Run()
	g := imaptestGroup{name: group, output: out.String()}
	m := imaptestResult.FindStringSubmatch(g.output)
	if m == nil {
		g.failed, g.commands = -1, -1
		return g
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	g.failed = n(4) + n(6)
	g.commands = n(5) + n(7)
	// imaptest says nothing of a group it skipped for a capability the
	// server lacks but that it ran no command.
	g.skipped = n(3) > 0 || g.commands == 0
	return g
}

// failedChecks splits imaptest's output into its failed-check blocks.
func failedChecks(output string) []string {
	var blocks []string
	var cur []string
	for _, l := range strings.Split(output, "\n") {
		switch {
		case strings.HasPrefix(l, "*** Test "), strings.HasPrefix(l, "Error: "):
			if cur != nil {
				blocks = append(blocks, strings.Join(cur, "\n"))
			}
			cur = []string{l}
		case strings.TrimSpace(l) == "":
			if cur != nil {
				blocks = append(blocks, strings.Join(cur, "\n"))
				cur = nil
			}
		case cur != nil:
			cur = append(cur, l)
		}
	}
	if cur != nil {
		blocks = append(blocks, strings.Join(cur, "\n"))
	}
	return blocks
}

// TestImaptestScripted runs every scripted group of Dovecot's imaptest
// against the server. A failed check fails the test unless its group is
// in imaptestKnown, which says why.
func TestImaptestScripted(t *testing.T) {
	bin := imaptestBinary(t)
	dir := filepath.Join(filepath.Dir(filepath.Dir(bin)), "src", "tests")
	if _, err := os.Stat(dir); err != nil {
		dir = filepath.Join(filepath.Dir(bin), "tests")
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("imaptest tests: %v", err)
	}
	var groups []string
	for _, e := range entries {
		if !e.IsDir() && !strings.HasSuffix(e.Name(), ".mbox") {
			groups = append(groups, e.Name())
		}
	}
	sort.Strings(groups)
	addr := imaptestServer(t)
	var table strings.Builder
	ran, failedGroups, failed, checks := 0, 0, 0, 0
	for _, g := range groups {
		r := runImaptestGroup(t, bin, addr, dir, g)
		switch {
		case r.skipped:
			fmt.Fprintf(&table, "%-32s skipped\n", g)
			continue
		case r.commands < 0:
			fmt.Fprintf(&table, "%-32s no result\n", g)
			t.Errorf("imaptest group %s gave no result:\n%s", g, r.output)
			continue
		}
		ran++
		checks += r.commands
		failed += r.failed
		fmt.Fprintf(&table, "%-32s %d/%d failed\n", g, r.failed, r.commands)
		if r.failed == 0 {
			continue
		}
		failedGroups++
		switch {
		case imaptestKnown[g] != "":
			t.Logf("imaptest group %s: known failures (%s):\n%s", g, imaptestKnown[g], strings.Join(failedChecks(r.output), "\n"))
		default:
			t.Errorf("imaptest group %s: %d of %d checks failed:\n%s", g, r.failed, r.commands, r.output)
		}
	}
	t.Logf("imaptest: %d groups ran, %d with failures; %d of %d checks failed\n%s", ran, failedGroups, failed, checks, table.String())
}

// imaptestKnown are the groups with failures that are not fixed yet, and
// why.
var imaptestKnown = map[string]string{}

// imaptestStress runs imaptest's random stress mode for secs seconds with
// the extra arguments given, and returns its output.
func imaptestStress(t *testing.T, bin, addr string, secs int, extra ...string) string {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	dir := filepath.Join(filepath.Dir(filepath.Dir(bin)), "src", "tests")
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs+60)*time.Second)
	defer cancel()
	args := append([]string{"host=" + host, "port=" + port, "user=stress%d", "pass=pass", "users=4", "clients=20",
		"secs=" + strconv.Itoa(secs), "mbox=" + filepath.Join(dir, "default.mbox"), "box=stress"}, extra...)
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Logf("imaptest %v: %v", extra, err)
	}
	return out.String()
}

// stressErrors returns imaptest's error lines, leaving out the IDLE
// continuation complaint its stress mode makes of every server (see the
// imaptest README).
func stressErrors(out string) []string {
	var errs []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "Error") && !strings.Contains(l, "IDLE: Unexpected continuation") {
			errs = append(errs, l)
		}
	}
	return errs
}

// TestImaptestStress runs imaptest's stress mode (20 clients on 4 voice
// mailboxes) plain, with noop=50, and with noop=50 idle=50: every
// session's view must stay consistent with the others' (no error line).
// IMAPTEST_SECS sets the length of each run (default 5 s).
func TestImaptestStress(t *testing.T) {
	bin := imaptestBinary(t)
	secs := 5
	if s, err := strconv.Atoi(os.Getenv("IMAPTEST_SECS")); err == nil && s > 0 {
		secs = s
	}
	for _, mode := range []struct {
		name  string
		extra []string
	}{
		{"plain", nil},
		{"noop", []string{"noop=50"}},
		{"noop-idle", []string{"noop=50", "idle=50"}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			addr := imaptestServer(t)
			out := imaptestStress(t, bin, addr, secs, mode.extra...)
			errs := stressErrors(out)
			t.Logf("imaptest stress %s: %d error lines\n%s", mode.name, len(errs), lastLines(out, 12))
			if len(errs) > 0 {
				n := min(len(errs), 20)
				t.Errorf("imaptest stress %s: %d errors, first:\n%s", mode.name, len(errs), strings.Join(errs[:n], "\n"))
			}
		})
	}
}

func lastLines(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}
