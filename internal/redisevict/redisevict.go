// Package redisevict tells whether Redis may evict keys. A Redis with maxmemory set and a
// maxmemory-policy other than noeviction drops keys when it is full, and to it a queued task, a dead
// letter or a batch counter is a key like any other: jobs vanish without an error anywhere. With
// noeviction a full Redis refuses writes instead, which producers and workers see and report.
package redisevict

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"
)

// NoEviction is the only policy under which Redis never drops a key on its own.
const NoEviction = "noeviction"

// Unknown is the policy reported when Redis refuses CONFIG GET (an ACL without it, or a managed
// Redis that renames or hides CONFIG).
const Unknown = "unknown"

// Status is what Redis says of eviction.
type Status struct {
	// Policy is maxmemory-policy, or Unknown. With Redis Cluster it is the first master's policy
	// that is not noeviction, if any, else Unknown if a master refuses CONFIG GET: a master that
	// evicts must not hide behind one that cannot be read.
	Policy string
	// MaxMemory is maxmemory in bytes; 0 means no limit (Redis then evicts nothing, but a 0 can be
	// raised at run time, so the policy still matters).
	MaxMemory int64
}

// Evicting reports whether Redis may drop keys under this status (Unknown counts as not known, not
// as evicting).
func (s Status) Evicting() bool { return s.Policy != NoEviction && s.Policy != Unknown }

// ErrRefused marks an error that is Redis refusing CONFIG GET, not a failure to reach it.
var ErrRefused = errors.New("redis refuses CONFIG GET")

// Read asks rdb (every master, for a cluster) for its eviction settings. When Redis refuses CONFIG
// GET, it returns Status{Policy: Unknown} and an error wrapping ErrRefused; any other error is a
// failure to ask, which may pass.
func Read(ctx context.Context, rdb redis.UniversalClient) (Status, error) {
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return readOne(ctx, rdb)
	}
	var mu sync.Mutex
	st := Status{Policy: NoEviction}
	var refused error // a master that refuses CONFIG GET: reported only if none evicts
	err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		s, err := readOne(ctx, node)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case errors.Is(err, ErrRefused):
			refused = err
		case err != nil:
			return err
		case st.Policy == NoEviction:
			st = s
		}
		return nil
	})
	switch {
	case err != nil:
		return Status{}, err
	case !st.Evicting() && refused != nil:
		return Status{Policy: Unknown}, refused
	}
	return st, nil
}

func readOne(ctx context.Context, rdb redis.Cmdable) (Status, error) {
	m, err := rdb.ConfigGet(ctx, "maxmemory*").Result()
	if err != nil {
		var re redis.Error
		if errors.As(err, &re) {
			return Status{Policy: Unknown}, fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return Status{}, fmt.Errorf("reading maxmemory-policy: %w", err)
	}
	p, ok := m["maxmemory-policy"]
	if !ok {
		return Status{Policy: Unknown}, fmt.Errorf("%w: it has no maxmemory-policy", ErrRefused)
	}
	mem, _ := strconv.ParseInt(m["maxmemory"], 10, 64)
	return Status{Policy: p, MaxMemory: mem}, nil
}

// Watcher reads the eviction settings again and again and logs what an operator must know: a
// policy that evicts, each time it appears or changes, and once that it cannot be checked. It is
// safe for concurrent use.
type Watcher struct {
	rdb    redis.UniversalClient
	log    *slog.Logger
	report func(Status)

	mu     sync.Mutex
	logged string // the policy last logged about; "" before any
}

// NewWatcher returns a Watcher of rdb that logs to log and hands every status read to report (nil:
// none).
func NewWatcher(rdb redis.UniversalClient, log *slog.Logger, report func(Status)) *Watcher {
	if report == nil {
		report = func(Status) {}
	}
	return &Watcher{rdb: rdb, log: log, report: report}
}

// Check reads the settings, reports them and logs a change. A failure to reach Redis is returned and
// changes nothing: the next check decides.
func (w *Watcher) Check(ctx context.Context) error {
	st, err := Read(ctx, w.rdb)
	if err != nil && !errors.Is(err, ErrRefused) {
		return err
	}
	w.report(st)
	w.mu.Lock()
	defer w.mu.Unlock()
	prev := w.logged
	if st.Policy == prev {
		return nil
	}
	w.logged = st.Policy
	switch {
	case err != nil:
		w.log.Warn("could not check Redis's maxmemory-policy (CONFIG GET refused): make sure it is noeviction, "+
			"or a full Redis silently drops queued jobs and dead letters", "error", err.Error())
	case st.Evicting():
		w.log.Warn("Redis's maxmemory-policy is "+st.Policy+", not noeviction: when it reaches maxmemory it silently "+
			"drops keys, queued jobs and dead letters among them; set maxmemory-policy noeviction",
			"maxmemory_policy", st.Policy, "maxmemory", st.MaxMemory)
	default:
		if prev != "" {
			w.log.Info("Redis's maxmemory-policy is noeviction", "maxmemory", st.MaxMemory)
		}
	}
	return nil
}
