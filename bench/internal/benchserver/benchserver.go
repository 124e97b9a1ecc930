// Package benchserver is the um side the benchmark tools measure: a
// boltstore, the um service on it and the IMAP server, set up the same way
// in every tool so that their numbers compare.
package benchserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"

	"github.com/embeddedum/um"
	"github.com/embeddedum/um/imapserver"
	"github.com/embeddedum/um/storage/boltstore"
)

// Password is the password of every benchmark user.
func Password(user string) string { return "pw-" + user }

// Open opens the boltstore in dir and a um service on it. closeAll closes
// the service, then the store.
func Open(dir string) (svc *um.Service, closeAll func(), err error) {
	store, err := boltstore.Open(dir, nil)
	if err != nil {
		return nil, nil, err
	}
	svc, err = um.New(store, nil)
	if err != nil {
		store.Close()
		return nil, nil, err
	}
	return svc, func() { svc.Close(); store.Close() }, nil
}

// NewIMAP returns the IMAP server of svc with the certificate and key in
// PEM, logins checked against Password, no limit on connections (the
// benchmarks open thousands from one address) and its log on standard
// error. insecureAuth lets clients log in without TLS.
func NewIMAP(svc *um.Service, certPEM, keyPEM []byte, insecureAuth bool) (*imapserver.Server, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return imapserver.New(svc, &imapserver.Options{
		Authenticate: func(ctx context.Context, user, pass string) (string, error) {
			if pass != Password(user) {
				return "", errors.New("wrong password")
			}
			return user, nil
		},
		TLSConfig:       &tls.Config{Certificates: []tls.Certificate{cert}},
		InsecureAuth:    insecureAuth,
		MaxConns:        -1,
		MaxConnsPerIP:   -1,
		MaxConnsPerUser: -1,
		Logf: func(format string, args ...any) {
			fmt.Fprintf(os.Stderr, "um server: "+format+"\n", args...)
		},
	})
}
