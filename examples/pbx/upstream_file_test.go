package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/embeddedum/um/internal/dovecot"
)

// TestUpstreamSecretsNotEchoed: whatever is wrong with an -upstream value,
// the error does not repeat its password.
func TestUpstreamSecretsNotEchoed(t *testing.T) {
	for _, in := range []string{
		"1001=imaps://alice:s3cret@mail.example.com:99999999999/%zz",
		"1001=imaps://alice:s3cret@[::1",
		"1001=http://alice:s3cret@mail.example.com",
		"1001=imaps://alice:s3cret@",
		"1001=imaps://alice:s3cret\x7f@mail.example.com",
	} {
		var f upstreamFlag
		err := f.Set(in)
		if err == nil {
			t.Errorf("Set(%q) = nil, want an error", in)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Set(%q) = %q: the error repeats the password", in, err)
		}
	}
}

func writeFile(t *testing.T, body string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "upstream.conf")
	if err := os.WriteFile(p, []byte(body), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUpstreamFile reads accounts from -upstream-file: comments and blank
// lines skipped, refused when others may read it, errors by line without
// the URL; -upstream on the command line still works and is marked for a
// warning.
func TestUpstreamFile(t *testing.T) {
	good := "# voice mailboxes\n\n1001 imaps://alice:s3cret@mail.example.com/Voicemail\n1002  imap://bob:pw2@127.0.0.1:1143\n"
	c, err := parseFlags([]string{"-upstream-file", writeFile(t, good, 0o600), "-upstream", "1003=imaps://carol:pw3@h"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var boxes []string
	for _, u := range c.upstreams {
		boxes = append(boxes, u.Mailbox+"@"+u.Addr+"/"+u.Folder)
	}
	if want := []string{"1003@h:993/", "1001@mail.example.com:993/Voicemail", "1002@127.0.0.1:1143/"}; !slices.Equal(boxes, want) {
		t.Errorf("upstreams = %q, want %q", boxes, want)
	}
	if !slices.Equal(c.argvSecrets, []string{"1003"}) {
		t.Errorf("argvSecrets = %q, want [1003] (warned about at start)", c.argvSecrets)
	}

	for _, tc := range []struct {
		name, body string
		perm       os.FileMode
		want       string
	}{
		{"readable by others", good, 0o644, "chmod 600"},
		{"readable by the group", good, 0o640, "chmod 600"},
		{"one field", "1001\n", 0o600, ":1: want BOX URL"},
		{"bad URL on line 2", "# x\n1001 imaps://alice:s3cret@\n", 0o600, ":2: mailbox 1001: no host"},
		{"twice", "1001 imaps://a:s3cret@h\n1001 imaps://a:s3cret@h\n", 0o600, "given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags([]string{"-upstream-file", writeFile(t, tc.body, tc.perm)}, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseFlags() = %v, want an error with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Fatalf("parseFlags() = %q: the error repeats the password", err)
			}
		})
	}
}

// TestUpstreamFileSyncWaits runs the command with its account in
// -upstream-file: no warning, and `sync 1001` answers ok at once after the
// start and right after the server comes back, waiting for the
// connection it needs instead of answering "not connected".
func TestUpstreamFileSyncWaits(t *testing.T) {
	d, err := dovecot.Start(dovecot.Options{Dir: t.TempDir(), Users: map[string]string{"alice": "alicepw"}})
	if err != nil {
		t.Fatalf("start Dovecot (Debian package dovecot-imapd): %v", err)
	}
	t.Cleanup(d.Stop)
	bin := buildPBX(t)
	file := writeFile(t, fmt.Sprintf("1001 imaps://alice:alicepw@%s\n", d.TLSAddr), 0o600)
	p := startPBX(t, bin, t.TempDir(), "-user", "1001:secret1", "-upstream-file", file, "-upstream-ca", d.CertFile)
	p.send("sync 1001")
	p.expect("ok")
	p.send("deposit 1001 5551234 Alice")
	p.expect("MWI 1001 on 1/0 (0/0)", "ok 1")

	d.Kill()
	p.send("sync 1001")
	if got := p.next(); !strings.HasPrefix(got, "error: ") {
		t.Fatalf("sync 1001 with the server down = %q, want an error", got)
	}
	if err := d.Restart(); err != nil {
		t.Fatal(err)
	}
	p.send("sync 1001")
	p.expect("ok")
	if s := p.stderr.String(); strings.Contains(s, "warning") || strings.Contains(s, "alicepw") {
		t.Fatalf("stderr = %q, want no warning and no password", s)
	}
	p.stdin.Close()
	p.waitExit()
}
