// Package selfsigned makes self-signed TLS certificates for servers on the
// loopback interface: the ones um's tests and benchmark tools start, and the
// demo PBX's IMAP server.
package selfsigned

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Options tune New. The zero value makes a certificate that is its own CA,
// valid for a week.
type Options struct {
	// Leaf makes a server certificate that is not a CA. Mail clients built
	// on NSS (Thunderbird) refuse a CA certificate as a server's own even
	// after the user accepted it, while OpenSSL-based clients (curl,
	// Python, mbsync, Dovecot's peers) given the certificate as a CA file
	// want it to be a CA.
	Leaf bool
	// Organization, when set, goes into the subject, so that the
	// certificate can be told apart in a client's certificate manager.
	Organization string
	// NotAfter ends the validity. Default: a week from now. The validity
	// starts an hour back, for clocks that are a little behind.
	NotAfter time.Time
}

// Cert is a self-signed certificate for localhost, 127.0.0.1 and ::1 with
// its ECDSA P-256 key.
type Cert struct {
	// CertPEM is the certificate in PEM.
	CertPEM []byte
	// KeyPEM is the private key in PEM, PKCS #8.
	KeyPEM []byte
	// TLS is the certificate and key for tls.Config.Certificates, with
	// Leaf set.
	TLS tls.Certificate
}

// New makes a key and a self-signed certificate for it.
func New(opts *Options) (*Cert, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	now := time.Now()
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(7 * 24 * time.Hour)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("selfsigned: generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              o.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if o.Organization != "" {
		tmpl.Subject.Organization = []string{o.Organization}
	}
	if !o.Leaf {
		tmpl.IsCA = true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("selfsigned: marshal key: %w", err)
	}
	return &Cert{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
	}, nil
}

// Pool returns a certificate pool that trusts c.
func (c *Cert) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.TLS.Leaf)
	return p
}

// ServerConfig returns a server configuration that presents c.
func (c *Cert) ServerConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{c.TLS}}
}

// ClientConfig returns a client configuration that trusts c and checks
// that the server is serverName ("localhost", "127.0.0.1" or "::1").
func (c *Cert) ClientConfig(serverName string) *tls.Config {
	return &tls.Config{RootCAs: c.Pool(), ServerName: serverName}
}
