package pgstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/embeddedum/um/storage/pgstore"
)

// serverBounds are the settings of a session that bound a silent client.
var serverBounds = []string{"idle_in_transaction_session_timeout",
	"tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count", "tcp_user_timeout"}

// showBounds returns the values SHOW gives for serverBounds on a session
// of s.
func showBounds(t *testing.T, s *pgstore.Store) []string {
	t.Helper()
	ctx := context.Background()
	c, err := pgstore.PoolOf(s).Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	return show(t, func(name string) (string, error) {
		var v string
		err := c.QueryRow(ctx, "SHOW "+name).Scan(&v)
		return v, err
	})
}

// show returns the value get gives for each of serverBounds.
func show(t *testing.T, get func(string) (string, error)) []string {
	t.Helper()
	out := make([]string, len(serverBounds))
	for i, name := range serverBounds {
		v, err := get(name)
		if err != nil {
			t.Fatalf("SHOW %s: %v", name, err)
		}
		out[i] = v
	}
	return out
}

// TestSessionBounds: every session of a Store's pool bounds how long the
// server waits on the node in a transaction and on a peer that stopped
// answering, by the Options or their defaults, except where the connection
// string sets a bound itself; a negative option leaves the server's own
// setting.
func TestSessionBounds(t *testing.T) {
	ctx := context.Background()
	dsn := newDatabase(t)
	conn := pgConnect(t, dsn)
	server := show(t, func(name string) (string, error) {
		var v string
		err := conn.QueryRow(ctx, "SHOW "+name).Scan(&v)
		return v, err
	})
	tests := []struct {
		name string
		dsn  string
		opts pgstore.Options
		want []string // as SHOW writes them; nil: the server's
	}{
		{name: "defaults", dsn: dsn,
			want: []string{"10s", "15", "3", "5", "30000"}},
		{name: "options", dsn: dsn, opts: pgstore.Options{IdleInTransaction: 1500 * time.Millisecond, PeerTimeout: 10 * time.Second},
			want: []string{"1500ms", "5", "1", "5", "10000"}},
		{name: "rounded up to the units", dsn: dsn, opts: pgstore.Options{IdleInTransaction: 2*time.Second + time.Microsecond, PeerTimeout: 1500 * time.Millisecond},
			want: []string{"2001ms", "1", "1", "5", "1500"}},
		{name: "the connection string's own", dsn: withParam(t, withParam(t, dsn, "idle_in_transaction_session_timeout", "2min"),
			"options", "-c tcp-user-timeout=7000 -c TCP_KEEPALIVES_COUNT=2"),
			want: []string{"2min", "15", "3", "2", "7000"}},
		{name: "negative", dsn: dsn, opts: pgstore.Options{IdleInTransaction: -1, PeerTimeout: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.want
			if want == nil {
				want = server
			}
			got := showBounds(t, openStore(t, tt.dsn, &tt.opts))
			for i, name := range serverBounds {
				if got[i] != want[i] {
					t.Errorf("SHOW %s = %s, want %s", name, got[i], want[i])
				}
			}
		})
	}
}
