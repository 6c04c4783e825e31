package redisguard_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/versori/activator/internal/redisguard"
	"github.com/versori/activator/internal/redistest"
)

func TestLookFirstAtStart(t *testing.T) {
	t.Parallel()
	const key = "activator:{q}:redis-run-id"
	tests := []struct {
		name   string
		stored string // "" leaves the key absent
		window time.Duration
		want   bool
	}{
		{name: "a new Redis", want: false, window: time.Minute},
		{name: "the same Redis", stored: "-", want: false, window: time.Minute},
		{name: "another Redis since", stored: "0123456789abcdef0123456789abcdef01234567", want: true, window: time.Minute},
		{name: "guard off", stored: "0123456789abcdef0123456789abcdef01234567", want: false, window: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := redistest.New(t)
			ctx := context.Background()
			if tt.stored == "-" {
				// What a worker stored while this Redis ran.
				redisguard.New(db.Client, redisguard.Config{Queue: "q", Window: time.Minute}).Check(ctx)
			} else if tt.stored != "" {
				db.Client.Set(ctx, key, tt.stored, 0)
			}
			changes := 0
			g := redisguard.New(db.Client, redisguard.Config{Queue: "q", Window: tt.window,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), OnChange: func() { changes++ }})
			db.Client.AddHook(g.Hook())
			if got := g.LookFirst(ctx); got != tt.want {
				t.Fatalf("LookFirst = %v, want %v", got, tt.want)
			}
			if tt.want != (changes == 1) {
				t.Errorf("OnChange called %d times", changes)
			}
			if tt.window == 0 {
				return
			}
			// The run id is stored for the next worker, and a new connection to the same server
			// changes nothing.
			stored, err := db.Client.Get(ctx, key).Result()
			if err != nil || len(stored) != 40 {
				t.Fatalf("stored run id = %q, %v", stored, err)
			}
			db.Client.Conn().Close() // a dedicated connection: a dial
			c := db.Client.Conn()
			if err := c.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			c.Close()
			if got := g.LookFirst(ctx); got != tt.want {
				t.Errorf("after a new connection to the same server, LookFirst = %v, want %v", got, tt.want)
			}
			if tt.want != (changes == 1) {
				t.Errorf("OnChange called %d times after a new connection", changes)
			}
		})
	}
}
