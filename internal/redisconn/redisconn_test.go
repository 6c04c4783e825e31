package redisconn_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/configerr"
	"github.com/versori/activator/internal/redisconn"
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
	} {
		got := redisconn.Redacted(u)
		if strings.Contains(got, secret) || !strings.Contains(got, "xxxxx") {
			t.Errorf("Redacted(…) = %q: the password must be masked", got)
		}
	}
}
