package netpeer

import (
	"net"
	"testing"
)

// TestKey: IPv4 peers are counted by address, IPv6 peers by their /64
// (zones and IPv4 mapping aside), other addresses by themselves.
func TestKey(t *testing.T) {
	tcp := func(s string) net.Addr { a, _ := net.ResolveTCPAddr("tcp", s); return a }
	for _, tc := range []struct {
		addr net.Addr
		want string
	}{
		{tcp("127.0.0.1:993"), "127.0.0.1"},
		{tcp("192.0.2.7:5060"), "192.0.2.7"},
		{tcp("[::ffff:192.0.2.7]:993"), "192.0.2.7"},
		{tcp("[2001:db8:1:2:aaaa::1]:993"), "2001:db8:1:2::/64"},
		{tcp("[2001:db8:1:2:ffff:ffff:ffff:ffff]:993"), "2001:db8:1:2::/64"},
		{tcp("[2001:db8:1:3::1]:993"), "2001:db8:1:3::/64"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 993, Zone: "eth0"}, "fe80::/64"},
		{tcp("[::1]:993"), "::/64"},
		{&net.UnixAddr{Name: "/run/um.sock", Net: "unix"}, "/run/um.sock"},
		{nil, ""},
	} {
		if got := Key(tc.addr); got != tc.want {
			t.Errorf("Key(%v) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}
