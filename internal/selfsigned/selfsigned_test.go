package selfsigned_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"io"
	"testing"
	"time"

	"github.com/embeddedum/um/internal/selfsigned"
)

func TestNew(t *testing.T) {
	notAfter := time.Now().AddDate(2, 0, 0).Truncate(time.Second)
	for _, tc := range []struct {
		name string
		opts *selfsigned.Options
	}{
		{"default", nil},
		{"leaf", &selfsigned.Options{Leaf: true, Organization: "um demo PBX", NotAfter: notAfter}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := selfsigned.New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
			if err != nil {
				t.Fatalf("X509KeyPair(CertPEM, KeyPEM) = %v", err)
			}
			leaf := pair.Leaf
			if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
				t.Errorf("key = %T, want ECDSA P-256", leaf.PublicKey)
			}
			wantCA := tc.opts == nil || !tc.opts.Leaf
			if leaf.IsCA != wantCA || (leaf.KeyUsage&x509.KeyUsageCertSign != 0) != wantCA {
				t.Errorf("IsCA = %v, key usage %b; want CA %v", leaf.IsCA, leaf.KeyUsage, wantCA)
			}
			if tc.opts != nil {
				if !leaf.NotAfter.Equal(notAfter) {
					t.Errorf("NotAfter = %v, want %v", leaf.NotAfter, notAfter)
				}
				if len(leaf.Subject.Organization) != 1 || leaf.Subject.Organization[0] != tc.opts.Organization {
					t.Errorf("Organization = %q, want %q", leaf.Subject.Organization, tc.opts.Organization)
				}
			} else if d := time.Until(leaf.NotAfter); d < 6*24*time.Hour || d > 8*24*time.Hour {
				t.Errorf("NotAfter in %v, want a week", d)
			}
			for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.Pool(), DNSName: host}); err != nil {
					t.Errorf("Verify(%s) = %v", host, err)
				}
			}
			handshake(t, c)
		})
	}
}

// handshake connects a client with ClientConfig to a server with
// ServerConfig over loopback TCP.
func handshake(t *testing.T, c *selfsigned.Cert) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Write([]byte("ok"))
			conn.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), c.ClientConfig("127.0.0.1"))
	if err != nil {
		t.Fatalf("Dial with ClientConfig = %v", err)
	}
	defer conn.Close()
	if b, err := io.ReadAll(conn); err != nil || string(b) != "ok" {
		t.Errorf("read %q, %v; want ok", b, err)
	}
	other, err := selfsigned.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	if bad, err := tls.Dial("tcp", ln.Addr().String(), other.ClientConfig("127.0.0.1")); err == nil {
		bad.Close()
		t.Error("Dial trusting another certificate = nil error")
	}
}
