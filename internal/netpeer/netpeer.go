// Package netpeer names the peer behind a connection, for the caps on
// connections per peer that the servers keep.
package netpeer

import (
	"net"
	"net/netip"
)

// Key returns what caps per peer count addr's connections by: an IPv4
// address as it is (an IPv4-mapped IPv6 one too), an IPv6 address by its
// /64. One host is commonly given a whole /64 and may connect from any
// address in it, so a cap per IPv6 address would cap nothing. An address
// that is no IP address (a Unix socket, a pipe) is its own key.
func Key(addr net.Addr) string {
	if addr == nil {
		return ""
	}
	s := addr.String()
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		host = s
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.WithZone("").Unmap()
	if a.Is4() {
		return a.String()
	}
	p, err := a.Prefix(64)
	if err != nil {
		return host
	}
	return p.String()
}
