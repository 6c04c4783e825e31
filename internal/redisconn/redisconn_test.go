package redisconn_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/configerr"
	"github.com/versori/activator/internal/redisconn"
	"github.com/versori/activator/internal/testutil"
)

const secret = "s3cr3t-Pa55"

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		url  string
		want asynq.RedisConnOpt
	}{
		{"redis", "redis://:" + secret + "@10.0.0.1:6379/3",
			asynq.RedisClientOpt{Addr: "10.0.0.1:6379", Password: secret, DB: 3}},
		{"redis with ACL user", "redis://app:" + secret + "@10.0.0.1:6379/3",
			asynq.RedisClientOpt{Addr: "10.0.0.1:6379", Username: "app", Password: secret, DB: 3}},
		{"redis without db", "redis://10.0.0.1:6379", asynq.RedisClientOpt{Addr: "10.0.0.1:6379"}},
		{"sentinel", "redis-sentinel://:" + secret + "@s1:26379,s2:26379,s3:26379?master=mymaster",
			asynq.RedisFailoverClientOpt{MasterName: "mymaster", SentinelAddrs: []string{"s1:26379", "s2:26379", "s3:26379"}, SentinelPassword: secret}},
		{"sentinel db 0", "redis-sentinel://s1:26379/0?master=m",
			asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s1:26379"}}},
		{"cluster", "redis-cluster://:" + secret + "@n1:7000,n2:7001,n3:7002",
			asynq.RedisClusterClientOpt{Addrs: []string{"n1:7000", "n2:7001", "n3:7002"}, Password: secret}},
		{"cluster with ACL user", "redis-cluster://app:" + secret + "@n1:7000/0",
			asynq.RedisClusterClientOpt{Addrs: []string{"n1:7000"}, Username: "app", Password: secret}},
		{"cluster without password", "redis-cluster://n1:7000", asynq.RedisClusterClientOpt{Addrs: []string{"n1:7000"}}},
		{"TLS sentinel", "rediss-sentinel://:" + secret + "@s1:26379,s2:26379?master=mymaster",
			asynq.RedisFailoverClientOpt{MasterName: "mymaster", SentinelAddrs: []string{"s1:26379", "s2:26379"}, SentinelPassword: secret,
				TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}},
		{"TLS cluster", "rediss-cluster://app:" + secret + "@n1:7000,n2:7001",
			asynq.RedisClusterClientOpt{Addrs: []string{"n1:7000", "n2:7001"}, Username: "app", Password: secret,
				TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}},
		{"sentinel password in the query", "redis-sentinel://s1:26379,s2:26379?master=m&sentinel_password=" + secret,
			asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s1:26379", "s2:26379"}, SentinelPassword: secret}},
		{"sentinel ACL user and password in the query", "redis-sentinel://s1:26379?sentinel_username=watcher&master=m&sentinel_password=" + secret,
			asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s1:26379"}, SentinelUsername: "watcher", SentinelPassword: secret}},
		{"sentinel ACL user with the password before the @", "redis-sentinel://:" + secret + "@s1:26379?master=m&sentinel_username=watcher",
			asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s1:26379"}, SentinelUsername: "watcher", SentinelPassword: secret}},
		{"TLS sentinel password in the query", "rediss-sentinel://s1:26379?master=m&sentinel_password=" + secret,
			asynq.RedisFailoverClientOpt{MasterName: "m", SentinelAddrs: []string{"s1:26379"}, SentinelPassword: secret,
				TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}},
		{"highest port", "redis://[::1]:65535/1", asynq.RedisClientOpt{Addr: "[::1]:65535", DB: 1}},
		{"port 1", "redis://h:1", asynq.RedisClientOpt{Addr: "h:1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := redisconn.Parse(tc.url)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Parse = %#v\nwant %#v", got, tc.want)
			}
		})
	}
}

// TestParseRefuses checks that each bad URL is refused with a message saying what to fix, and that no
// message repeats the password.
func TestParseRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, url, want string
	}{
		{"scheme", "http://:" + secret + "@h:6379/0", "scheme"},
		{"no host", "redis://", "no host"},
		{"not a URL", "redis://:" + secret + "@[::1", "cannot be parsed"},
		{"bad db", "redis://:" + secret + "@h:6379/abc", "database number"},
		{"sentinel without master", "redis-sentinel://:" + secret + "@s1:26379", "?master=NAME"},
		{"sentinel db 2", "redis-sentinel://:" + secret + "@s1:26379/2?master=m", "database 0"},
		{"cluster db 1", "redis-cluster://:" + secret + "@n1:7000/1", "database 0 only"},
		{"cluster options", "redis-cluster://:" + secret + "@n1:7000?password=x", "takes none"},
		{"cluster node without port", "redis-cluster://:" + secret + "@n1,n2:7000", `node "n1" is not host:port`},
		{"cluster no host", "redis-cluster://", "no host"},
		// A port no connection can use: the worker would wait for Redis forever.
		{"port out of range", "redis://:" + secret + "@127.0.0.1:99999/1", `host "127.0.0.1:99999" has port 99999: a port is 1 to 65535`},
		{"port 0", "redis://127.0.0.1:0/1", "has port 0"},
		{"no port", "redis://:" + secret + "@127.0.0.1/1", `host "127.0.0.1" is not host:port`},
		{"tls port out of range", "rediss://h:70000/0", "has port 70000"},
		{"ipv6 port out of range", "redis://[::1]:65536/0", "has port 65536"},
		{"sentinel port out of range", "redis-sentinel://s1:26379,s2:99999?master=m", `Sentinel "s2:99999" has port 99999`},
		{"sentinel without port", "redis-sentinel://s1?master=m", `Sentinel "s1" is not host:port`},
		{"cluster port out of range", "redis-cluster://n1:7000,n2:123456", `node "n2:123456" has port 123456`},
		{"TLS sentinel without master", "rediss-sentinel://:" + secret + "@s1:26379", "(rediss-sentinel://s1:26379) names no master"},
		{"TLS sentinel db 1", "rediss-sentinel://s1:26379/1?master=m", "database 0"},
		{"TLS cluster options", "rediss-cluster://:" + secret + "@n1:7000?tls=true", "rediss-cluster:// takes none"},
		{"TLS cluster node without port", "rediss-cluster://n1", `node "n1" is not host:port`},
		{"tls query instead of a scheme", "redis-sentinel+tls://s1:26379?master=m", "rediss-sentinel"},
		// Query parameters asynq and go-redis would ignore: each is refused by name, its value left out.
		{"sentinel unknown parameter", "redis-sentinel://s1:26379?master=m&sentinel_pasword=" + secret,
			`has the query parameter "sentinel_pasword", which is not one of master, sentinel_password, sentinel_username`},
		{"sentinel password=", "redis-sentinel://s1:26379?master=m&password=" + secret, `query parameter "password"`},
		{"TLS sentinel unknown parameter", "rediss-sentinel://s1:26379?master=m&dial_timeout=5s", `query parameter "dial_timeout"`},
		{"sentinel password twice", "redis-sentinel://:" + secret + "@s1:26379?master=m&sentinel_password=" + secret, "Sentinels' password twice"},
		{"sentinel parameter repeated", "redis-sentinel://s1:26379?master=m&sentinel_password=a" + secret + "&sentinel_password=" + secret, `"sentinel_password" 2 times`},
		{"master repeated", "redis-sentinel://s1:26379?master=m&master=n", `"master" 2 times`},
		{"redis password=", "redis://h:6379/0?password=" + secret, `(redis://h:6379/0) has the query parameter "password": redis:// takes none`},
		{"rediss option", "rediss://:" + secret + "@h:6379/0?db=2", `query parameter "db": rediss:// takes none`},
		{"redis sentinel_password", "redis://h:6379/0?sentinel_password=" + secret, `query parameter "sentinel_password"`},
		{"unparseable query", "redis-sentinel://s1:26379?master=m&x=%zz" + secret, "query that cannot be parsed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, parse := range []func(string) error{
				func(u string) error { _, err := redisconn.Parse(u); return err },
				func(u string) error { _, err := redisconn.Open(u); return err },
			} {
				err := parse(tc.url)
				if err == nil {
					t.Fatalf("accepted %s", redisconn.Redacted(tc.url))
				}
				if !strings.Contains(err.Error(), tc.want) {
					t.Errorf("error %q does not say %q", err, tc.want)
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error repeats the password: %q", err)
				}
				// A library error names the argument; only the commands name REDIS_URL.
				var ce *configerr.Error
				if !errors.As(err, &ce) || ce.Pkg != "redisconn" || ce.Field != "URL" || strings.Contains(err.Error(), "REDIS_URL") {
					t.Errorf("error %q (%T) is not a configerr.Error about the URL, or names a variable", err, err)
				}
			}
		})
	}
}

func TestOpenClientKinds(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url  string
		want any
	}{
		{"redis://127.0.0.1:1/2", (*redis.Client)(nil)},
		{"redis-sentinel://127.0.0.1:1?master=m", (*redis.Client)(nil)}, // go-redis's failover client is a *redis.Client
		{"redis-cluster://127.0.0.1:1,127.0.0.1:2", (*redis.ClusterClient)(nil)},
	}
	for _, tc := range tests {
		c, err := redisconn.Open(tc.url)
		if err != nil {
			t.Fatalf("Open(%s): %v", tc.url, err)
		}
		if reflect.TypeOf(c) != reflect.TypeOf(tc.want) {
			t.Errorf("Open(%s) = %T, want %T", tc.url, c, tc.want)
		}
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
}

func TestRedacted(t *testing.T) {
	t.Parallel()
	for _, u := range []string{
		"redis://:" + secret + "@h:6379/0",
		"redis-sentinel://:" + secret + "@s1:26379,s2:26379?master=m",
		"redis-cluster://app:" + secret + "@n1:7000,n2:7001",
		// go-redis's and other clients' spellings of a password in the query, which an operator may
		// try: they are no part of the forms, but must not reach a log line either.
		"redis-sentinel://s1:26379?master=m&sentinel_password=" + secret,
		"redis://h:6379/0?password=" + secret + "&db=1",
		"rediss://h:6379/0?Auth_Token=" + secret,
	} {
		got := redisconn.Redacted(u)
		if strings.Contains(got, secret) || !strings.Contains(got, "xxxxx") {
			t.Errorf("Redacted(…) = %q: the password must be masked", got)
		}
	}
}

// TestRefused checks that what a Redis refuses of a URL (a database it does not have, a password) is
// a configuration error naming the URL without its password, and that a Redis that does not answer
// is not.
func TestRefused(t *testing.T) {
	t.Parallel()
	addr := testutil.RedisAddr()
	ping := func(rawURL string) error {
		rdb, err := redisconn.Open(rawURL)
		if err != nil {
			t.Fatal(err)
		}
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return rdb.Ping(ctx).Err()
	}
	for _, tc := range []struct {
		url, want string
	}{
		{"redis://" + addr + "/99", "redisconn: URL (redis://" + addr + "/99) names database 99, which Redis refuses (ERR DB index is out of range)"},
	} {
		err := redisconn.Refused(tc.url, ping(tc.url))
		var ce *configerr.Error
		if !errors.As(err, &ce) || ce.Field != "URL" || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), secret) {
			t.Errorf("Refused(%s) = %v, want a configerr starting %q", tc.url, err, tc.want)
		}
	}
	// A Redis of the test's own, with a password.
	own := testutil.StartRedisServer(t, false)
	if err := own.Client.ConfigSet(context.Background(), "requirepass", "right-"+secret).Err(); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"redis://:" + secret + "@" + own.Addr() + "/0", "redis://" + own.Addr() + "/0"} {
		err := redisconn.Refused(u, ping(u))
		if want := "redisconn: URL (redis://" + own.Addr() + "/0): Redis refuses the password ("; err == nil || !strings.HasPrefix(err.Error(), want) ||
			strings.Contains(err.Error(), secret) {
			t.Errorf("Refused(%s) = %v, want one starting %q", u, err, want)
		}
	}
	if err := redisconn.Refused("redis://"+addr+"/1", ping("redis://"+addr+"/1")); err != nil {
		t.Errorf("Refused of a working URL = %v", err)
	}
	down := "redis://127.0.0.1:" + strconv.Itoa(testutil.FreePort(t)) + "/0"
	if err := ping(down); err == nil || redisconn.Refused(down, err) != nil {
		t.Errorf("Refused of a Redis that does not answer (%v) = %v, want nil", err, redisconn.Refused(down, err))
	}
}

// TestSentinelCredentials runs a private Sentinel that requires a password (and knows an ACL user)
// and checks that the Sentinels' credentials in the query are used: before, sentinel_password= was
// dropped and the client asked the Sentinels without it.
func TestSentinelCredentials(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	master := testutil.StartRedisServer(t, false)
	conf := filepath.Join(t.TempDir(), "sentinel.conf") // Sentinel rewrites its config file
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("sentinel monitor m 127.0.0.1 %d 1\n", master.Port)), 0o600); err != nil {
		t.Fatal(err)
	}
	sentinel := testutil.StartRedisServer(t, false, conf, "--sentinel")
	// The ACL user first: once default has a password, the unauthenticated client is refused.
	for _, cmd := range [][]any{
		{"ACL", "SETUSER", "watcher", "on", ">watch-" + secret, "allcommands", "allchannels"},
		{"ACL", "SETUSER", "default", ">" + secret},
	} {
		if err := sentinel.Client.Do(ctx, cmd...).Err(); err != nil {
			t.Fatalf("%v: %v", cmd[:3], err)
		}
	}
	base := "redis-sentinel://" + sentinel.Addr()
	for _, tc := range []struct {
		name, url string
		ok        bool
	}{
		{"password in the query", base + "?master=m&sentinel_password=" + secret, true},
		{"ACL user in the query", base + "?master=m&sentinel_username=watcher&sentinel_password=watch-" + secret, true},
		{"password before the @", "redis-sentinel://:" + secret + "@" + sentinel.Addr() + "?master=m", true},
		{"no password", base + "?master=m", false},
		{"wrong password", base + "?master=m&sentinel_password=wrong", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb, err := redisconn.Open(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			defer rdb.Close()
			key := "sentinel-credentials-" + strings.ReplaceAll(tc.name, " ", "-")
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			err = rdb.Set(cctx, key, "1", 0).Err()
			switch {
			case tc.ok && err != nil:
				t.Fatalf("SET through the Sentinel: %v", err)
			case tc.ok && master.Client.Get(ctx, key).Val() != "1":
				t.Errorf("the write did not reach the master the Sentinel names")
			case !tc.ok && err == nil:
				t.Errorf("the Sentinel answered without the right password")
			}
		})
	}
}
