// Package sipmwi lights the message-waiting lamps of SIP phones from um's
// MWI hook (RFC 3842 message-summary over SUBSCRIBE/NOTIFY, RFC 6665).
//
// It is a module of its own so that um's main module keeps no SIP
// dependency: a host that does not speak SIP never downloads one.
package sipmwi
