package redisevict_test

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/redisevict"
	"github.com/versori/activator/internal/testutil"
)

// TestWatcher reads the policy of private redis-servers: the default (noeviction), one that evicts,
// and one whose ACL refuses CONFIG; and checks what is reported and logged, and that a policy
// changed at run time is noticed by the next check.
func TestWatcher(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		noConfig bool // connect as a user whose ACL refuses CONFIG
		want     redisevict.Status
		wantLog  string // in the first check's log; "" for no warning
	}{
		{"noeviction", nil, false, redisevict.Status{Policy: "noeviction"}, ""},
		{"allkeys-lru", []string{"--maxmemory-policy", "allkeys-lru", "--maxmemory", "100mb"}, false,
			redisevict.Status{Policy: "allkeys-lru", MaxMemory: 100 << 20}, "maxmemory-policy is allkeys-lru, not noeviction"},
		{"volatile-ttl without maxmemory", []string{"--maxmemory-policy", "volatile-ttl"}, false,
			redisevict.Status{Policy: "volatile-ttl"}, "maxmemory-policy is volatile-ttl"},
		{"CONFIG refused by the ACL", []string{"--maxmemory-policy", "allkeys-lru"}, true,
			redisevict.Status{Policy: redisevict.Unknown}, "could not check Redis's maxmemory-policy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			srv := testutil.StartRedisServer(t, false, tc.args...)
			opt := &redis.Options{Addr: srv.Addr()}
			if tc.noConfig {
				if err := srv.Client.Do(ctx, "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config").Err(); err != nil {
					t.Fatal(err)
				}
				opt.Username, opt.Password = "app", "pw"
			}
			rdb := redis.NewClient(opt)
			t.Cleanup(func() { rdb.Close() })

			var logs testutil.SyncBuffer
			var got []redisevict.Status
			w := redisevict.NewWatcher(rdb, slog.New(slog.NewTextHandler(&logs, nil)), func(s redisevict.Status) { got = append(got, s) })
			for range 3 {
				if err := w.Check(ctx); err != nil {
					t.Fatalf("Check: %v", err)
				}
			}
			if len(got) != 3 || got[0] != tc.want {
				t.Fatalf("reported %+v, want %+v three times", got, tc.want)
			}
			if tc.wantLog == "" && logs.String() != "" {
				t.Errorf("logged for a Redis that does not evict:\n%s", logs.String())
			}
			if tc.wantLog != "" && (!strings.Contains(logs.String(), tc.wantLog) || strings.Count(logs.String(), "\n") != 1) {
				t.Errorf("three checks logged\n%s\nwant one line saying %q", logs.String(), tc.wantLog)
			}
			_, err := redisevict.Read(ctx, rdb)
			if tc.noConfig != errors.Is(err, redisevict.ErrRefused) {
				t.Errorf("Read: %v, refused %v", err, tc.noConfig)
			}
			if tc.noConfig {
				return
			}
			// Changed at run time: the next check notices and logs.
			next := "allkeys-random"
			if tc.want.Evicting() {
				next = "noeviction"
			}
			if err := srv.Client.ConfigSet(ctx, "maxmemory-policy", next).Err(); err != nil {
				t.Fatal(err)
			}
			if err := w.Check(ctx); err != nil {
				t.Fatal(err)
			}
			if got[len(got)-1].Policy != next || !strings.Contains(logs.String(), "maxmemory-policy is "+next) {
				t.Errorf("after CONFIG SET %s: reported %+v, logged\n%s", next, got[len(got)-1], logs.String())
			}
		})
	}
}

// TestWatcherUnreachable checks that a Redis that does not answer is an error that changes nothing:
// no report, no log.
func TestWatcherUnreachable(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t)), MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	var logs testutil.SyncBuffer
	reported := false
	w := redisevict.NewWatcher(rdb, slog.New(slog.NewTextHandler(&logs, nil)), func(redisevict.Status) { reported = true })
	if err := w.Check(context.Background()); err == nil || errors.Is(err, redisevict.ErrRefused) {
		t.Errorf("Check = %v, want a failure to reach Redis", err)
	}
	if reported || logs.String() != "" {
		t.Errorf("reported %v, logged %q", reported, logs.String())
	}
}

// TestReadClusterMixed reads a two-master Redis Cluster whose masters differ: one evicts, and the
// other's ACL refuses CONFIG. The evicting master must be reported: "unknown" would hide it behind a
// log line that says only that the policy could not be checked.
func TestReadClusterMixed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var nodes [2]*testutil.RedisServer
	var bus [2]int
	for i := range nodes {
		bus[i] = testutil.FreePort(t)
		nodes[i] = testutil.StartRedisServer(t, false, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus[i]), "--cluster-node-timeout", "5000")
		if err := nodes[i].Client.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", i*8192, i*8192+8191).Err(); err != nil {
			t.Skipf("CLUSTER ADDSLOTSRANGE (redis-server 7 or later): %v", err)
		}
	}
	if err := nodes[0].Client.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", nodes[1].Port, bus[1]).Err(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 15*time.Second, "cluster_state:ok", func() bool {
		for _, n := range nodes {
			info, err := n.Client.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:2") {
				return false
			}
		}
		return true
	})
	// The same user on both, allowed CONFIG on the evicting node only.
	acl := [][]any{
		{"ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config"},
		{"ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all"},
	}
	for i, n := range nodes {
		if err := n.Client.Do(ctx, acl[i]...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := nodes[1].Client.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{nodes[0].Addr()}, Username: "app", Password: "pw"})
	t.Cleanup(func() { rdb.Close() })
	st, err := redisevict.Read(ctx, rdb)
	if st.Policy != "allkeys-lru" || err != nil {
		t.Errorf("Read = %+v, %v; want allkeys-lru, the evicting master's, and no error", st, err)
	}
}
