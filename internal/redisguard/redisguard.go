// Package redisguard notices when Redis may have lost its latest writes, so that the jobs those
// writes had finished look before they activate again.
//
// A Redis restarted from an append-only file or a snapshot that misses its last second, or a replica
// promoted while it lagged its master, brings back jobs that had just activated their pair: their
// completion was among the lost writes. Their next attempt is a first attempt (retry count 0), which
// would POST again without a look-up. Such a job was queued before the loss; where it comes back
// (the head of the queue, or the retry set, whence asynq forwards it to the back) is not known. So
// after a restart every job queued before it looks first: one extra list call per job of the backlog
// that existed then, once.
//
// Each Redis process has a run id of its own, so a changed run id is the sign of a restart or a
// failover. The guard reads it whenever the client made a new connection (old connections break on
// a restart or failover, so the client dials again before it can fetch a job from the new server)
// and at start, and keeps the run id with the time the change was first seen in Redis
// (activator:{<queue>}:redis-run-id), so that a worker that starts later, or one that has not seen
// the change itself, knows it too.
package redisguard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
)

// skew is how much later than a restart a job may have been queued and still look first: producers'
// clocks are not the worker's.
const skew = time.Minute

// unsureFor is how long every first attempt looks first after the run id could not be read.
const unsureFor = time.Minute

// Guard watches one Redis (the one a queue lives on) for restarts and failovers. It is safe for
// concurrent use.
type Guard struct {
	rdb      redis.UniversalClient
	key      string
	queue    string
	off      atomic.Bool // switched off, or Redis refuses INFO: restarts cannot be told
	log      *slog.Logger
	onChange func()

	dials   atomic.Uint64 // new connections made
	checked atomic.Uint64 // dials seen at the last successful check
	since   atomic.Int64  // unix ns of the latest restart known; 0: none
	unsure  atomic.Int64  // unix ns before which every first attempt looks first

	mu    sync.Mutex // serializes checks
	runID string     // the run id last seen; "" before the first check
}

// Config configures a Guard.
type Config struct {
	// Queue names the queue whose Redis is watched; the run id is kept under the queue's hash tag,
	// on the queue's node of a Redis Cluster.
	Queue string
	// Off turns the guard off: LookFirst is always false.
	Off    bool
	Logger *slog.Logger
	// OnChange, if set, is called for every restart or failover this guard notices itself.
	OnChange func()
}

// New returns a Guard of rdb and attaches it to rdb, so that it learns of new connections.
func New(rdb redis.UniversalClient, cfg Config) *Guard {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	g := &Guard{rdb: rdb, key: rediskeys.RedisRunID(cfg.Queue), queue: cfg.Queue, log: cfg.Logger, onChange: cfg.OnChange}
	g.off.Store(cfg.Off)
	// The first LookFirst checks, whether or not a connection was made yet.
	g.dials.Store(1)
	if !cfg.Off {
		g.attach()
	}
	return g
}

// attach adds the guard's dial hook to rdb, or, on a cluster, to every node client: a cluster
// client's own hooks never see a dial.
func (g *Guard) attach() {
	h := dialHook{g}
	cc, ok := g.rdb.(*redis.ClusterClient)
	if !ok {
		g.rdb.AddHook(h)
		return
	}
	cc.OnNewNode(func(c *redis.Client) { c.AddHook(h) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Nodes made before OnNewNode; one made in between gets the hook twice, which only counts its
	// dials twice.
	_ = cc.ForEachShard(ctx, func(_ context.Context, c *redis.Client) error {
		c.AddHook(h)
		return nil
	})
}

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

// LookFirst reports whether the first attempt of a job queued at enqueuedAt must look up its pair
// before activating: Redis restarted or failed over after the job was queued (it may have finished
// before the restart, and been brought back), or Redis's run id could not be read lately. A job
// without an enqueue time counts as queued before any restart. It costs two atomic loads unless the
// client made a new connection since the last check, when it reads the run id (an INFO and a GET,
// once for all callers).
func (g *Guard) LookFirst(ctx context.Context, enqueuedAt time.Time) bool {
	if g.off.Load() {
		return false
	}
	if g.dials.Load() != g.checked.Load() {
		g.check(ctx)
	}
	now := time.Now().UnixNano()
	if now < g.unsure.Load() {
		return true
	}
	since := g.since.Load()
	return since != 0 && (enqueuedAt.IsZero() || enqueuedAt.Before(time.Unix(0, since).Add(skew)))
}

// Check reads the run id now; the worker calls it at start, before it takes a job.
func (g *Guard) Check(ctx context.Context) {
	if !g.off.Load() {
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
	o, err := observe(ctx, g.rdb, g.key, g.queue, g.runID)
	if refused(err) {
		// A managed Redis may refuse INFO for good; looking first for ever would double every
		// job's calls.
		g.off.Store(true)
		g.log.Error("Redis refuses INFO, so restarts and failovers that lose writes cannot be noticed: "+
			"keep its AOF on (appendfsync always) and replicas in sync (min-replicas-to-write), or a job finished "+
			"just before such a loss may activate its pair again", "error", err.Error())
		return
	}
	if err != nil {
		g.unsureNow(fmt.Sprintf("could not read Redis's run id (%v)", err))
		return
	}
	if o.since > g.since.Load() {
		g.since.Store(o.since)
		switch {
		case o.changed:
			if g.onChange != nil {
				g.onChange()
			}
			g.log.Warn("Redis restarted or failed over (its run id changed): it may have lost its latest writes, " +
				"so jobs queued before now look up their pair before activating")
		default:
			g.log.Warn("Redis restarted or failed over (another worker noticed first): jobs queued before then look up their pair before activating",
				"since", time.Unix(0, o.since).UTC().Format(time.RFC3339))
		}
	}
	g.runID = o.runID
	g.checked.Store(seen)
}

// observation is what observe found.
type observation struct {
	runID   string
	since   int64 // unix ns of the latest restart known; 0: none
	changed bool  // this observation is the first to see it
}

// observe reads Redis's run id and the one stored under key, and stores what it learnt. lastSeen is
// the run id the caller saw before ("" for none). The stored run id is missing on a new Redis, but
// also on one restored from before the key was first written: a queue asynq already knows then
// counts as a restart, lest its jobs activate again.
func observe(ctx context.Context, rdb redis.UniversalClient, key, queue, lastSeen string) (observation, error) {
	id, err := readRunID(ctx, rdb, key)
	if err != nil {
		return observation{}, err
	}
	storedID, storedSince, err := readStored(ctx, rdb, key)
	if err != nil {
		return observation{}, fmt.Errorf("reading the run id workers stored: %w", err)
	}
	o := observation{runID: id, since: storedSince}
	restarted := lastSeen != "" && lastSeen != id
	switch {
	case storedID == id && (storedSince != 0 || !restarted):
		return o, nil
	case storedID == "" && !restarted:
		known, err := rdb.SIsMember(ctx, rediskeys.AsynqQueues, queue).Result()
		if err != nil {
			return observation{}, fmt.Errorf("reading asynq's queues: %w", err)
		}
		if !known {
			// A new Redis, or a queue never used: no job can come back.
			o.since = 0
			return o, store(ctx, rdb, key, id, 0)
		}
	}
	o.since, o.changed = time.Now().UnixNano(), true
	return o, store(ctx, rdb, key, id, o.since)
}

// Mark records Redis's run id for queue, as a worker's guard does, so that the run id is stored
// from the queue's first job on: a Redis restored to before then is noticed too. Producers call it
// before they first enqueue.
func Mark(ctx context.Context, rdb redis.UniversalClient, queue string) error {
	_, err := observe(ctx, rdb, rediskeys.RedisRunID(queue), queue, "")
	if refused(err) {
		return nil // the guards say so, at the workers
	}
	return err
}

// unsureNow makes every first attempt look first for a while, and leaves the check to be made again.
func (g *Guard) unsureNow(why string) {
	g.unsure.Store(time.Now().Add(unsureFor).UnixNano())
	g.log.Warn(why + ": jobs look up their pair before activating until it can be read")
}

// readStored reads the run id workers stored, and when it was first seen to change (unix ns, 0 for
// never); "" when there is none.
func readStored(ctx context.Context, rdb redis.UniversalClient, key string) (string, int64, error) {
	v, err := rdb.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, err
	}
	id, since, _ := strings.Cut(v, "|")
	n, _ := strconv.ParseInt(since, 10, 64)
	return id, n, nil
}

func store(ctx context.Context, rdb redis.UniversalClient, key, id string, since int64) error {
	if err := rdb.Set(ctx, key, id+"|"+strconv.FormatInt(since, 10), 0).Err(); err != nil {
		return fmt.Errorf("storing the run id: %w", err)
	}
	return nil
}

// refused reports whether err is Redis refusing INFO for good (no permission, or no such command),
// as opposed to a failure that passes (BUSY, LOADING, a lost connection).
func refused(err error) bool {
	var reply redis.Error
	if !errors.As(err, &reply) {
		return false
	}
	msg := strings.ToLower(reply.Error())
	return strings.HasPrefix(msg, "noperm") || strings.Contains(msg, "unknown command") ||
		strings.Contains(msg, "unknown subcommand") || strings.Contains(msg, "not supported")
}

// readRunID reads the run id of the server that holds key (the queue's).
func readRunID(ctx context.Context, rdb redis.UniversalClient, key string) (string, error) {
	var info string
	var err error
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		// A cluster's servers each have a run id: the queue's is its slot's master's.
		var m *redis.Client
		if m, err = cc.MasterForKey(ctx, key); err != nil {
			return "", err
		}
		info, err = m.Info(ctx, "server").Result()
	} else {
		info, err = rdb.Info(ctx, "server").Result()
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
