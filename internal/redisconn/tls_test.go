package redisconn_test

import (
	"context"
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
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/redisconn"
	"github.com/versori/activator/internal/testutil"
)

// testCA is a certificate authority made for one test, with a server certificate for 127.0.0.1 that
// it signed, written to files for redis-server.
type testCA struct {
	pool                      *x509.CertPool
	caFile, certFile, keyFile string
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "activator test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Client and server use: Redis also dials its peers (a Sentinel its master, a cluster's bus)
	// with the same certificate.
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ca := testCA{pool: x509.NewCertPool(), caFile: filepath.Join(dir, "ca.crt"),
		certFile: filepath.Join(dir, "redis.crt"), keyFile: filepath.Join(dir, "redis.key")}
	ca.pool.AddCert(caCert)
	for path, block := range map[string]*pem.Block{
		ca.caFile:   {Type: "CERTIFICATE", Bytes: caDER},
		ca.certFile: {Type: "CERTIFICATE", Bytes: der},
		ca.keyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca
}

// args are redis-server's TLS arguments for a TLS port; clients need no certificate of their own.
func (ca testCA) args(tlsPort int) []string {
	return []string{"--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", ca.certFile, "--tls-key-file", ca.keyFile,
		"--tls-ca-cert-file", ca.caFile, "--tls-auth-clients", "no"}
}

// TestTLSForms connects through each TLS form to a private redis-server that listens for TLS on a
// port of its own (its plain port is only for the test's set-up): a Redis, a one-node Cluster, and
// a Sentinel that talks TLS to its clients and to the master. Each URL names only TLS ports, so a
// client that did not speak TLS could not write; one without the test's CA must fail on the
// certificate, which shows that it is checked.
func TestTLSForms(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	ctx := context.Background()

	tests := []struct {
		name  string
		setUp func(t *testing.T) string // starts the servers and returns the URL
	}{
		{"rediss", func(t *testing.T) string {
			port := testutil.FreePort(t)
			testutil.StartRedisServer(t, false, ca.args(port)...)
			return fmt.Sprintf("rediss://127.0.0.1:%d/0", port)
		}},
		{"rediss-cluster", func(t *testing.T) string {
			port := testutil.FreePort(t)
			node := testutil.StartRedisServer(t, false, append(ca.args(port), "--tls-cluster", "yes",
				"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				// A lone node has met no peer that would tell it its address, and announces none.
				"--cluster-announce-ip", "127.0.0.1")...)
			if err := node.Client.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 10*time.Second, "the cluster ok", func() bool {
				info, err := node.Client.ClusterInfo(ctx).Result()
				return err == nil && strings.Contains(info, "cluster_state:ok")
			})
			return fmt.Sprintf("rediss-cluster://127.0.0.1:%d", port)
		}},
		{"rediss-sentinel", func(t *testing.T) string {
			masterPort, sentinelPort := testutil.FreePort(t), testutil.FreePort(t)
			testutil.StartRedisServer(t, false, ca.args(masterPort)...)
			conf := filepath.Join(t.TempDir(), "sentinel.conf")
			body := fmt.Sprintf("sentinel monitor m 127.0.0.1 %d 1\n", masterPort)
			if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			testutil.StartRedisServer(t, false, append([]string{conf, "--sentinel"},
				append(ca.args(sentinelPort), "--tls-replication", "yes")...)...)
			return fmt.Sprintf("rediss-sentinel://127.0.0.1:%d?master=m", sentinelPort)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := tc.setUp(t)
			for _, trusted := range []bool{true, false} {
				opt, err := redisconn.Parse(url)
				if err != nil {
					t.Fatalf("Parse(%s): %v", url, err)
				}
				rdb := withRoots(t, opt, ca.pool, trusted).MakeRedisClient().(redis.UniversalClient)
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err = rdb.Set(cctx, "{activations}:tls", "yes", 0).Err()
				cancel()
				rdb.Close()
				switch {
				case trusted && err != nil:
					t.Errorf("%s with the CA: %v", url, err)
				case !trusted && (err == nil || !strings.Contains(err.Error(), "certificate")):
					t.Errorf("%s without the CA: %v, want a certificate error", url, err)
				case !trusted:
					// An untrusted certificate is a setting to fix, not a Redis to wait for: the
					// worker and enqueue stop at start with one line, which keeps the password out.
					withPassword := strings.Replace(url, "://", "://:s3cret-pw@", 1)
					refused := redisconn.Refused(withPassword, err)
					if refused == nil || !strings.Contains(refused.Error(), "SSL_CERT_FILE") ||
						strings.Contains(refused.Error(), "s3cret-pw") || strings.Contains(refused.Error(), "\n") {
						t.Errorf("Refused(%s, %v) = %v, want one line naming SSL_CERT_FILE, without the password", url, err, refused)
					}
				}
			}
		})
	}
}

// withRoots gives opt's TLS configuration the test CA's pool (trusted) or the system's, as
// SSL_CERT_FILE would in production; it fails the test when opt has no TLS configuration.
func withRoots(t *testing.T, opt asynq.RedisConnOpt, pool *x509.CertPool, trusted bool) asynq.RedisConnOpt {
	t.Helper()
	roots := func(c *tls.Config) *tls.Config {
		if c == nil {
			t.Fatalf("%T has no TLS configuration", opt)
		}
		c = c.Clone()
		if trusted {
			c.RootCAs = pool
		}
		return c
	}
	switch o := opt.(type) {
	case asynq.RedisClientOpt:
		o.TLSConfig = roots(o.TLSConfig)
		return o
	case asynq.RedisFailoverClientOpt:
		o.TLSConfig = roots(o.TLSConfig)
		return o
	case asynq.RedisClusterClientOpt:
		o.TLSConfig = roots(o.TLSConfig)
		return o
	}
	t.Fatalf("unexpected options %T", opt)
	return nil
}
