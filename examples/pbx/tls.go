package main

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/embeddedum/um/internal/selfsigned"
)

// loadCert returns the certificate to serve: the files given with -cert and
// -key, or else a self-signed one kept in dir, made on the first run (or
// when the kept one has expired) so that a mail client's exception for it
// holds across restarts.
func loadCert(dir, certFile, keyFile string) (tls.Certificate, error) {
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return tls.Certificate{}, errors.New("-cert and -key go together")
		}
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("load certificate: %w", err)
		}
		return c, nil
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err == nil && time.Now().Before(c.Leaf.NotAfter) {
		return c, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, fmt.Errorf("load certificate: %w", err)
	}
	if err := writeSelfSigned(certFile, keyFile); err != nil {
		return tls.Certificate{}, err
	}
	c, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load new certificate: %w", err)
	}
	return c, nil
}

func writeSelfSigned(certFile, keyFile string) error {
	// Not a CA: mail clients built on NSS refuse a CA certificate as the
	// server's own.
	c, err := selfsigned.New(&selfsigned.Options{Leaf: true, Organization: "um demo PBX", NotAfter: time.Now().AddDate(2, 0, 0)})
	if err != nil {
		return err
	}
	// The key first: a certificate without its key would be loaded and fail.
	if err := writeFileAtomic(keyFile, c.KeyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certFile, c.CertPEM, 0o644)
}

// fingerprint returns the SHA-256 fingerprint of a certificate as mail
// clients show it: upper-case hex pairs separated by colons.
func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// writeFileAtomic writes data to name through a temporary file and a rename,
// so a crash never leaves half a file behind.
func writeFileAtomic(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

// trustCA returns the client configuration for a server whose certificate
// is signed by the CA in caFile, given with flag (-smtp-ca, -upstream-ca);
// nil, the system's roots, when caFile is empty.
func trustCA(flag, caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate in %s", flag, caFile)
	}
	return &tls.Config{RootCAs: pool}, nil
}
