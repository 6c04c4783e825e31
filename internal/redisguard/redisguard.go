// Package redisguard notices when Redis may have lost its latest writes, so that workers look before
// they activate until the jobs those writes had finished have run again.
//
// A Redis restarted from an append-only file or a snapshot that misses its last second, or a replica
// promoted while it lagged its master, brings back as pending the jobs that had just activated their
// pair: their completion was among the lost writes. Their next attempt is a first attempt (retry
// count 0), which would POST again without a look-up. Each Redis process has a run id of its own, so a
// changed run id is the sign of a restart or failover. The guard reads it whenever the client made a
// new connection (old connections break on a restart or failover, so the client dials again before it
// can fetch a job from the new server) and, at start, compares it with the run id the workers last
// stored in Redis, which covers a restart while no worker was running. After a change, LookFirst
// reports true for the window: the jobs the lost writes had finished are the first in line to be
// fetched again (asynq fetches from the same end it did before), so they run within it.
package redisguard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Guard watches one Redis (the one a queue lives on) for restarts and failovers. It is safe for
// concurrent use.
type Guard struct {
	rdb      redis.UniversalClient
	key      string
	queue    string
	window   time.Duration
	log      *slog.Logger
	onChange func()

	dials   atomic.Uint64 // new connections made
	checked atomic.Uint64 // dials seen at the last successful check
	until   atomic.Int64  // unix ns before which LookFirst is true

	mu    sync.Mutex  // serializes checks
	runID string      // the run id last seen; "" before the first check
	off   atomic.Bool // Redis refuses INFO: restarts cannot be told
}

// Config configures a Guard.
type Config struct {
	// Queue names the queue whose Redis is watched; its run id is stored under the queue's hash tag,
	// on the queue's node of a Redis Cluster.
	Queue string
	// Window is how long first attempts look first after a restart or failover; 0 disables the
	// guard (LookFirst is always false).
	Window time.Duration
	Logger *slog.Logger
	// OnChange, if set, is called for every restart or failover noticed.
	OnChange func()
}

// New returns a Guard of rdb. Add its Hook to rdb so that it learns of new connections.
func New(rdb redis.UniversalClient, cfg Config) *Guard {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Guard{rdb: rdb, key: "activator:{" + cfg.Queue + "}:redis-run-id", queue: cfg.Queue,
		window: cfg.Window, log: cfg.Logger, onChange: cfg.OnChange}
	// The first LookFirst checks, whether or not a connection was made yet.
	g.dials.Store(1)
	return g
}

// Hook returns the go-redis hook that tells the guard of every new connection.
func (g *Guard) Hook() redis.Hook { return dialHook{g} }

type dialHook struct{ g *Guard }

func (h dialHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err == nil {
			h.g.dials.Add(1)
		}
		return c, err
	}
}

func (h dialHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h dialHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// LookFirst reports whether a job's first attempt must look up its pair before activating: Redis was
// found restarted or failed over less than the window ago, or its run id could not be read after a
// new connection. It costs an atomic load unless the client made a new connection since the last
// check, when it reads the run id (one INFO command, once for all callers).
func (g *Guard) LookFirst(ctx context.Context) bool {
	if g.window <= 0 || g.off.Load() {
		return false
	}
	if g.dials.Load() != g.checked.Load() {
		g.check(ctx)
	}
	return time.Now().UnixNano() < g.until.Load()
}

// Check reads the run id now; the worker calls it at start.
func (g *Guard) Check(ctx context.Context) {
	if g.window > 0 {
		g.check(ctx)
	}
}

func (g *Guard) check(ctx context.Context) {
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := g.dials.Load()
	if seen == g.checked.Load() {
		return // checked by a caller that held the lock before
	}
	id, err := g.readRunID(ctx)
	var reply redis.Error
	if errors.As(err, &reply) {
		// A managed Redis may refuse INFO; looking first for ever would double every job's calls.
		g.off.Store(true)
		g.log.Error("Redis refuses INFO, so restarts and failovers that lose writes cannot be noticed: "+
			"keep its AOF on (appendfsync always) and replicas in sync (min-replicas-to-write), or a job finished "+
			"just before such a loss may activate its pair again", "error", err.Error())
		return
	}
	if err != nil {
		// Nothing can be told; assume the worst until a check succeeds.
		g.suspect(fmt.Sprintf("could not read Redis's run id (%v)", err), false)
		return
	}
	switch {
	case g.runID == "":
		stored, err := g.rdb.Get(ctx, g.key).Result()
		switch {
		case errors.Is(err, redis.Nil):
			// A new Redis, or one that lost everything: no job can come back from it.
		case err != nil:
			g.suspect(fmt.Sprintf("could not read the run id workers stored (%v)", err), false)
			return
		case stored != id:
			g.suspect("Redis restarted or failed over since a worker last looked (its run id changed)", true)
		}
		if stored != id {
			if err := g.rdb.Set(ctx, g.key, id, 0).Err(); err != nil {
				g.log.Warn("could not store Redis's run id", "error", err.Error())
			}
		}
	case g.runID != id:
		g.suspect("Redis restarted or failed over (its run id changed)", true)
		if err := g.rdb.Set(ctx, g.key, id, 0).Err(); err != nil {
			g.log.Warn("could not store Redis's run id", "error", err.Error())
		}
	}
	g.runID = id
	g.checked.Store(seen)
}

// suspect makes LookFirst true for the window from now.
func (g *Guard) suspect(why string, changed bool) {
	until := time.Now().Add(g.window).UnixNano()
	if until > g.until.Load() {
		g.until.Store(until)
	}
	if changed {
		if g.onChange != nil {
			g.onChange()
		}
		g.log.Warn(why+": it may have lost its latest writes, so jobs look up their pair before activating for a while",
			"window", g.window.String())
		return
	}
	g.log.Warn(why+": jobs look up their pair before activating until it can be read", "window", g.window.String())
}

// readRunID reads the run id of the server that holds the queue's keys.
func (g *Guard) readRunID(ctx context.Context) (string, error) {
	var info string
	var err error
	if cc, ok := g.rdb.(*redis.ClusterClient); ok {
		// A cluster's servers each have a run id: the queue's is its slot's master's.
		var m *redis.Client
		if m, err = cc.MasterForKey(ctx, g.key); err != nil {
			return "", err
		}
		info, err = m.Info(ctx, "server").Result()
	} else {
		info, err = g.rdb.Info(ctx, "server").Result()
	}
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "run_id:"); ok && v != "" {
			return v, nil
		}
	}
	return "", errors.New("INFO server has no run_id")
}
