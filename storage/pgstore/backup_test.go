package pgstore_test

import (
	"bytes"
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/embeddedum/um"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// pgTool finds a PostgreSQL client program, as pgtest finds the server.
func pgTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(dirs) == 0 {
		t.Fatalf("%s not found on PATH or in /usr/lib/postgresql/*/bin (Debian package postgresql-client)", name)
	}
	return dirs[len(dirs)-1]
}

// TestBackupWithPgDump is the package documentation's backup, run: a dump
// taken with pg_dump while the store is open, restored with pg_restore
// into an empty database, and the documented SQL run on it, holds every
// message byte for byte under the same UIDs, with larger UIDVALIDITY
// values.
func TestBackupWithPgDump(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	s := openStore(t, dsn, nil)
	if err := s.CreateMailbox(ctx, "1001"); err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("RIFF....WAVE"), 40000) // several chunks
	m, err := s.Append(ctx, "1001", um.Message{ID: uuid.New(), Folder: um.Inbox, AudioType: "audio/wav"}, bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	before, err := s.Folders(ctx, "1001")
	if err != nil {
		t.Fatal(err)
	}
	dump := filepath.Join(t.TempDir(), "voicemail.dump")
	if out, err := exec.Command(pgTool(t, "pg_dump"), "-Fc", "-f", dump, "--dbname="+dsn).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	restored := newDatabase(t)
	if out, err := exec.Command(pgTool(t, "pg_restore"), "--no-owner", "--dbname="+restored, dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
	conn, err := pgx.Connect(ctx, restored)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`SELECT setval('um_uidvalidity', greatest(last_value, extract(epoch FROM now())::bigint)) FROM um_uidvalidity`,
		`UPDATE um_folders SET uidvalidity = nextval('um_uidvalidity')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Close(ctx)

	r := openStore(t, restored, nil)
	after, err := r.Folders(ctx, "1001")
	if err != nil || len(after) != len(before) {
		t.Fatalf("Folders() of the restored database = %v, %v; want %d folders", after, err, len(before))
	}
	for i := range before {
		if after[i].Name != before[i].Name || after[i].UIDNext != before[i].UIDNext || after[i].UIDValidity <= before[i].UIDValidity {
			t.Errorf("restored folder %+v, before %+v: want the same name and UIDNEXT, a larger UIDVALIDITY", after[i], before[i])
		}
	}
	got, err := r.Get(ctx, "1001", m.ID)
	if err != nil || got.UID != m.UID {
		t.Fatalf("Get() in the restored database = %+v, %v; want UID %d", got, err, m.UID)
	}
	rc, err := r.Open(ctx, "1001", m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, err := io.ReadAll(rc); err != nil || !bytes.Equal(b, content) {
		t.Errorf("restored content: %d bytes, %v; want the %d stored", len(b), err, len(content))
	}
}
