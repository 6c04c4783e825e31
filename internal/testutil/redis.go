package testutil

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
)

// RedisAddr is the Redis server tests use: $TEST_REDIS_ADDR, or 127.0.0.1:6379.
func RedisAddr() string {
	if a := os.Getenv("TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// RedisDB is a Redis database claimed by one test.
type RedisDB struct {
	Addr   string
	Number int
	Client *redis.Client
}

// Keys returns every key of the database but rediskeys.TestOwned: what the test's code wrote.
func (d *RedisDB) Keys(ctx context.Context) ([]string, error) {
	keys, err := d.Client.Keys(ctx, "*").Result()
	return slices.DeleteFunc(keys, func(k string) bool { return k == rediskeys.TestOwned }), err
}

// URL is the database's redis:// URL, as the worker and enqueue take it.
func (d *RedisDB) URL() string { return "redis://" + d.Addr + "/" + strconv.Itoa(d.Number) }

// lastDB is the highest database tests claim; 13 to 15 are left to `make bench` (which owns and
// flushes database 13), so that a benchmark never flushes a running test's data.
const lastDB = 12

// Redis claims a free database (1 to lastDB) for the rest of t, flushes it, and flushes and frees it
// when t ends. A database that holds keys tests did not write (it has keys but no
// rediskeys.TestOwned) is someone's data: it is never flushed, and when every database is such, t
// fails saying so. It fails t when no Redis answers, and waits while all databases are claimed.
func Redis(t testing.TB) *RedisDB {
	t.Helper()
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: 0})
	t.Cleanup(func() { admin.Close() })
	if err := admin.Ping(ctx).Err(); err != nil {
		t.Fatalf("testutil: no Redis at %s (start one, or set TEST_REDIS_ADDR): %v", RedisAddr(), err)
	}
	owner := fmt.Sprintf("%d:%s:%d", os.Getpid(), t.Name(), time.Now().UnixNano())
	deadline := time.Now().Add(5 * time.Minute)
	for {
		foreign := 0
		for n := 1; n <= lastDB; n++ {
			ok, err := admin.SetNX(ctx, rediskeys.TestClaim(n), owner, 15*time.Minute).Result()
			if err != nil {
				t.Fatalf("testutil: claiming db %d: %v", n, err)
			}
			if !ok {
				continue
			}
			db := &RedisDB{Addr: RedisAddr(), Number: n, Client: redis.NewClient(&redis.Options{Addr: RedisAddr(), DB: n})}
			if mine, err := testsOwn(ctx, db.Client); err != nil || !mine {
				db.Client.Close()
				admin.Del(ctx, rediskeys.TestClaim(n))
				if err != nil {
					t.Fatalf("testutil: reading db %d: %v", n, err)
				}
				foreign++
				continue
			}
			if err := own(ctx, db.Client); err != nil {
				t.Fatalf("testutil: flushing db %d: %v", n, err)
			}
			t.Cleanup(func() {
				_ = own(context.Background(), db.Client)
				db.Client.Close()
				admin.Del(context.Background(), rediskeys.TestClaim(n))
			})
			return db
		}
		if foreign == lastDB {
			t.Fatalf("testutil: databases 1 to %d of %s all hold keys tests did not write; tests flush what they use, so they "+
				"leave them alone: point TEST_REDIS_ADDR at a Redis for tests", lastDB, RedisAddr())
		}
		if time.Now().After(deadline) {
			t.Fatal("testutil: no free Redis database after 5 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// testsOwn reports whether the database holds only what tests wrote: nothing, or TestOwned.
func testsOwn(ctx context.Context, c *redis.Client) (bool, error) {
	n, err := c.DBSize(ctx).Result()
	if err != nil || n == 0 {
		return err == nil, err
	}
	m, err := c.Exists(ctx, rediskeys.TestOwned).Result()
	return m == 1, err
}

// own flushes the database and marks it as the tests'.
func own(ctx context.Context, c *redis.Client) error {
	if err := c.FlushDB(ctx).Err(); err != nil {
		return err
	}
	return c.Set(ctx, rediskeys.TestOwned, "flushed by the activator tests", 0).Err()
}
