package worker_test

import (
	"context"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori/versoritest"
)

// TestRedisEvictionPolicyMetric starts a worker on private redis-servers and checks that
// activator_redis_eviction_policy shows the policy from the start: noeviction, an evicting one, and
// "unknown" when the ACL refuses CONFIG.
func TestRedisEvictionPolicyMetric(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		noConfig bool
		want     string
	}{
		{"noeviction", nil, false, "noeviction"},
		{"allkeys-lru", []string{"--maxmemory-policy", "allkeys-lru"}, false, "allkeys-lru"},
		{"CONFIG refused", []string{"--maxmemory-policy", "allkeys-lru"}, true, "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := testutil.StartRedisServer(t, false, tc.args...)
			opt := &redis.Options{Addr: srv.Addr()}
			if tc.noConfig {
				if err := srv.Client.Do(context.Background(), "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config").Err(); err != nil {
					t.Fatal(err)
				}
				opt.Username, opt.Password = "app", "pw"
			}
			rdb := redis.NewClient(opt)
			t.Cleanup(func() { rdb.Close() })
			w, _ := startWorker(t, rdb, versoritest.New(t, versoritest.Options{}), nil)
			g := w.Metrics().RedisEvictionPolicy
			if n := promtest.CollectAndCount(g); n != 1 {
				t.Fatalf("%d series of activator_redis_eviction_policy, want 1", n)
			}
			if v := promtest.ToFloat64(g.WithLabelValues(tc.want)); v != 1 {
				t.Errorf("activator_redis_eviction_policy{policy=%q} = %v, want 1", tc.want, v)
			}
		})
	}
}
