package pgstore_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/embeddedum/um/storage/pgstore"
	"golang.org/x/sys/unix"
)

// TestClientSocketBounds: this node's end of every pool connection gives
// up on a server that stopped answering as the server does on the node:
// keepalive probes after half of Options.PeerTimeout and TCP_USER_TIMEOUT
// of all of it. A negative PeerTimeout leaves pgx's dialer, without a user
// timeout.
func TestClientSocketBounds(t *testing.T) {
	dsn := newDatabase(t)
	// Through the proxy: a TCP connection whatever the test server's DSN.
	_, viaProxy := muteProxy(t, dsn)
	tests := []struct {
		name string
		peer time.Duration
		want [5]int // SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT
	}{
		{name: "default", want: [5]int{1, 15, 3, 5, 30000}},
		{name: "10s", peer: 10 * time.Second, want: [5]int{1, 5, 1, 5, 10000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := socketBounds(t, openStore(t, viaProxy, &pgstore.Options{PeerTimeout: tt.peer}))
			if got != tt.want {
				t.Errorf("keepalive, idle, interval, count, user timeout = %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("negative", func(t *testing.T) {
		if got := socketBounds(t, openStore(t, viaProxy, &pgstore.Options{PeerTimeout: -1})); got[4] != 0 {
			t.Errorf("TCP_USER_TIMEOUT = %d ms with PeerTimeout negative, want none", got[4])
		}
	})
}

// socketBounds reads the keepalive and user timeout of a pool connection
// of s.
func socketBounds(t *testing.T, s *pgstore.Store) [5]int {
	t.Helper()
	c, err := pgstore.PoolOf(s).Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Release()
	nc := c.Conn().PgConn().Conn()
	if tc, ok := nc.(interface{ NetConn() net.Conn }); ok { // TLS
		nc = tc.NetConn()
	}
	raw, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var out [5]int
	opts := [5][2]int{{unix.SOL_SOCKET, unix.SO_KEEPALIVE}, {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE},
		{unix.IPPROTO_TCP, unix.TCP_KEEPINTVL}, {unix.IPPROTO_TCP, unix.TCP_KEEPCNT}, {unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT}}
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		for i, o := range opts {
			if out[i], gerr = unix.GetsockoptInt(int(fd), o[0], o[1]); gerr != nil {
				return
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return out
}
