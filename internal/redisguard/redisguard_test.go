package redisguard_test

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/redisguard"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
)

var key = rediskeys.RedisRunID("q")

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// runID reads the server's run id as the guard does.
func runID(t *testing.T, c *redis.Client) string {
	t.Helper()
	info, err := c.Info(context.Background(), "server").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "run_id:"); ok {
			return v
		}
	}
	t.Fatal("no run_id")
	return ""
}

func TestLookFirst(t *testing.T) {
	t.Parallel()
	noticed := time.Now().Add(-time.Hour) // when another worker saw the run id change
	tests := []struct {
		name string
		// stored is what workers stored before: "" none, "same" this server's run id as first seen,
		// "other" another server's, "noticed" this server's with the time another worker saw it,
		// "none, queue known" none though asynq knows the queue (a Redis restored to before the key
		// was first written), "marked" what a producer's Mark stored before the first job.
		stored      string
		off         bool
		wantChanges int
		// look is whether a job queued at each offset from now looks first.
		look map[time.Duration]bool
	}{
		{name: "a new Redis", look: map[time.Duration]bool{-time.Hour: false, 0: false}},
		{name: "the same Redis", stored: "same", look: map[time.Duration]bool{-time.Hour: false}},
		{name: "restarted since a worker last looked", stored: "other", wantChanges: 1,
			look: map[time.Duration]bool{-24 * time.Hour: true, -time.Second: true, 2 * time.Minute: false}},
		{name: "another worker noticed the restart", stored: "noticed",
			look: map[time.Duration]bool{-2 * time.Hour: true, -30 * time.Minute: false}},
		{name: "switched off", stored: "other", off: true, look: map[time.Duration]bool{-time.Hour: false}},
		{name: "restored to before the run id was stored", stored: "none, queue known", wantChanges: 1,
			look: map[time.Duration]bool{-time.Hour: true, 2 * time.Minute: false}},
		{name: "marked by a producer", stored: "marked", look: map[time.Duration]bool{-time.Hour: false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			ctx := context.Background()
			switch tt.stored {
			case "same":
				db.Client.Set(ctx, key, runID(t, db.Client)+"|0", 0)
			case "other":
				db.Client.Set(ctx, key, "0123456789abcdef0123456789abcdef01234567|0", 0)
			case "noticed":
				db.Client.Set(ctx, key, runID(t, db.Client)+"|"+strconv.FormatInt(noticed.UnixNano(), 10), 0)
			case "none, queue known":
				db.Client.SAdd(ctx, rediskeys.AsynqQueues, "q")
			case "marked":
				if err := redisguard.Mark(ctx, db.Client, "q"); err != nil {
					t.Fatal(err)
				}
				db.Client.SAdd(ctx, rediskeys.AsynqQueues, "q") // the producer's enqueue
			}
			changes := 0
			g := redisguard.New(db.Client, redisguard.Config{Queue: "q", Off: tt.off, Logger: quiet(),
				OnChange: func() { changes++ }})
			check := func(when string) {
				t.Helper()
				for offset, want := range tt.look {
					if got := g.LookFirst(ctx, time.Now().Add(offset)); got != want {
						t.Errorf("%s: a job queued %s from now: LookFirst = %v, want %v", when, offset, got, want)
					}
				}
				if changes != tt.wantChanges {
					t.Errorf("%s: OnChange called %d times, want %d", when, changes, tt.wantChanges)
				}
			}
			check("at start")
			if tt.off {
				return
			}
			// The run id is kept for the next worker, with the time of a change this guard saw.
			stored, err := db.Client.Get(ctx, key).Result()
			if err != nil || !strings.HasPrefix(stored, runID(t, db.Client)+"|") {
				t.Fatalf("stored = %q, %v; want this server's run id", stored, err)
			}
			// A new connection to the same server changes nothing.
			c := db.Client.Conn()
			if err := c.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			c.Close()
			check("after a new connection")
			// A worker that starts later knows what this one saw.
			later := redisguard.New(db.Client, redisguard.Config{Queue: "q", Logger: quiet()})
			for offset, want := range tt.look {
				if got := later.LookFirst(ctx, time.Now().Add(offset)); got != want {
					t.Errorf("a worker started later: a job queued %s from now: LookFirst = %v, want %v", offset, got, want)
				}
			}
		})
	}
}

// TestLookFirstWhenRunIDCannotBeRead: a Redis that cannot be reached leaves every first attempt
// looking first (the check is made again on the next connection); one that refuses INFO (some
// managed services; miniredis here) switches the guard off rather than double every job's calls.
func TestLookFirstWhenRunIDCannotBeRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 100 * time.Millisecond})
	t.Cleanup(func() { down.Close() })
	if g := redisguard.New(down, redisguard.Config{Queue: "q", Logger: quiet()}); !g.LookFirst(ctx, time.Now()) {
		t.Error("Redis unreachable: LookFirst = false, want true")
	}
	mr := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { c.Close() })
	mr.Set(key, "0123456789abcdef0123456789abcdef01234567|0")
	if g := redisguard.New(c, redisguard.Config{Queue: "q", Logger: quiet()}); g.LookFirst(ctx, time.Now().Add(-time.Hour)) {
		t.Error("INFO refused: LookFirst = true, want the guard off")
	}
}
