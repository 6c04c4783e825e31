// Package pairs is the registry of every pair activator has queued, across queues: which queue owns
// each pair, and whether a pair had a job before.
//
// asynq's task ids are unique within one queue only, and a task's record goes away (retention ends,
// the archive trims it, a dead letter is revoked or purged). Without the registry, the same pair
// queued on two queues would be activated twice, and a pair queued again after its record went away
// would POST without looking first. The registry never forgets a pair: a pair it has seen is queued
// again only with a look-up first (Seen), and only on the queue that owns it (Elsewhere otherwise).
//
// Its keys are rediskeys.Pair(<task id>) -> "<queue>|<unix seconds of the claim, by Redis's
// clock>" ("" once released by a purge), and rediskeys.PairsBackfilled. They share the hash tag
// {pairs}, so on a Redis Cluster they live on one node, and a chunk of claims is one pipeline there.
package pairs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/tasks"
)

// State is what a claim found.
type State int

// The states.
const (
	// Fresh: the pair was never queued; it is the claimer's now.
	Fresh State = iota
	// Seen: the pair was queued before, on the claimer's queue (or released since); it is the
	// claimer's, and a job for it must look the pair up before activating.
	Seen
	// Elsewhere: another queue owns the pair; nothing was claimed.
	Elsewhere
)

// Claim is what a claim found for one pair.
type Claim struct {
	State State
	Owner string // the queue that owns the pair (the claimer's, unless Elsewhere)
	// Since is when the owner claimed the pair (Elsewhere only), by Redis's clock.
	Since time.Time
	// value is the registry's entry as found, for TakeOver.
	value string
}

// Registry is the pair registry on one Redis. It is safe for concurrent use.
type Registry struct {
	rdb redis.UniversalClient

	mu     sync.Mutex
	synced bool
	offset time.Duration // Redis's clock minus this process's
}

// New returns the registry kept in rdb.
func New(rdb redis.UniversalClient) *Registry { return &Registry{rdb: rdb} }

// Backfill records, once per Redis, the pairs queued before the registry existed: the task id of
// every activation task asynq holds, and every dead letter, each for the queue that holds it. Without
// it, such a pair would be Fresh: queued on another queue, or again after its record expired, its job
// would POST without looking first. It scans the whole keyspace (every master of a cluster), once;
// later calls cost one EXISTS. Producers call it before their first claim.
func (r *Registry) Backfill(ctx context.Context) error {
	if n, err := r.rdb.Exists(ctx, rediskeys.PairsBackfilled).Result(); err != nil || n == 1 {
		return err
	}
	scan := func(ctx context.Context, c redis.Cmdable) error {
		return r.backfillFrom(ctx, c)
	}
	var err error
	if cc, ok := r.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, r.rdb)
	}
	if err != nil {
		return fmt.Errorf("pairs: backfilling the registry: %w", err)
	}
	return r.rdb.Set(ctx, rediskeys.PairsBackfilled, "1", 0).Err()
}

// backfillFrom claims the pairs of one server's asynq tasks and dead letters for their queues, each
// by its canonical task id, and moves dead letters stored under a task id that is not canonical (a
// release before ULIDs were made canonical) to the canonical one, where enqueues look for them.
func (r *Registry) backfillFrom(ctx context.Context, c redis.Cmdable) error {
	byQueue := map[string][]string{}
	flush := func() error {
		for q, ids := range byQueue {
			if _, err := r.Claim(ctx, q, ids); err != nil {
				return err
			}
		}
		clear(byQueue)
		return nil
	}
	// asynq's records of activations' tasks (tasks.TaskID starts with "act:").
	it := c.Scan(ctx, 0, rediskeys.AsynqTasksPattern("act:"), 1000).Iterator()
	for n := 0; it.Next(ctx); n++ {
		if q, id, ok := rediskeys.AsynqTaskOf(it.Val()); ok {
			byQueue[q] = append(byQueue[q], tasks.CanonicalTaskID(id))
		}
		if n%500 == 499 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	// Dead-letter stores: a hash of task id -> entry per queue.
	dl := c.Scan(ctx, 0, rediskeys.DeadLettersPattern, 1000).Iterator()
	var renames [][2]string // queue, dead letter id not in canonical form
	for dl.Next(ctx) {
		k := dl.Val()
		q, ok := rediskeys.QueueOfDeadLetters(k)
		if !ok {
			continue
		}
		ids := c.HScan(ctx, k, 0, "", 1000).Iterator()
		for n := 0; ids.Next(ctx); n++ {
			if n%2 == 0 { // HSCAN yields field, value, field, value...
				id := ids.Val()
				if c := tasks.CanonicalTaskID(id); c != id {
					renames = append(renames, [2]string{q, id})
					id = c
				}
				byQueue[q] = append(byQueue[q], id)
			}
			if len(byQueue[q]) >= 500 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		if err := ids.Err(); err != nil {
			return err
		}
	}
	if err := dl.Err(); err != nil {
		return err
	}
	for _, rn := range renames {
		if err := deadletter.NewStore(r.rdb, rn[0]).Rename(ctx, rn[1], tasks.CanonicalTaskID(rn[1])); err != nil {
			return err
		}
	}
	return flush()
}

// Claim claims the pairs of taskIDs for queue and returns what it found for each, in order. The
// usual claim, of a pair never queued, is one SET NX, all of them sent in one round trip; only pairs
// seen before cost a second one, to read whose they are.
func (r *Registry) Claim(ctx context.Context, queue string, taskIDs []string) ([]Claim, error) {
	if len(taskIDs) == 0 {
		return nil, nil
	}
	if queue == "" {
		return nil, errors.New("pairs: claim without a queue")
	}
	now, err := r.Now(ctx)
	if err != nil {
		return nil, fmt.Errorf("pairs: claiming %d pairs: %w", len(taskIDs), err)
	}
	mine := queue + "|" + strconv.FormatInt(now.Unix(), 10)
	pipe := r.rdb.Pipeline()
	set := make([]*redis.BoolCmd, len(taskIDs))
	for i, id := range taskIDs {
		set[i] = pipe.SetNX(ctx, rediskeys.Pair(id), mine, 0)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("pairs: claiming %d pairs: %w", len(taskIDs), err)
	}
	out := make([]Claim, len(taskIDs))
	var seen []int
	for i, c := range set {
		if c.Val() {
			out[i] = Claim{State: Fresh, Owner: queue}
		} else {
			seen = append(seen, i)
		}
	}
	if len(seen) == 0 {
		return out, nil
	}
	get := make([]*redis.StringCmd, len(seen))
	pipe = r.rdb.Pipeline()
	for j, i := range seen {
		get[j] = pipe.Get(ctx, rediskeys.Pair(taskIDs[i]))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("pairs: reading %d claims: %w", len(seen), err)
	}
	for j, i := range seen {
		c, err := r.classify(ctx, queue, taskIDs[i], get[j].Val(), now)
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

// refreshAfter is how old the owner's own claim may be before a new claim by the owner writes it
// again: another queue takes an idle pair over only when its claim is older than a minute, and an
// owner's enqueue on its way must not look idle.
const refreshAfter = 30 * time.Second

// classify says what the registry's entry v for taskID means to queue, taking a released pair (v
// "") for it, and renewing an old claim of queue's own.
func (r *Registry) classify(ctx context.Context, queue, taskID, v string, now time.Time) (Claim, error) {
	for {
		if v != "" {
			owner, since := parseEntry(v)
			if owner != queue {
				return Claim{State: Elsewhere, Owner: owner, Since: since, value: v}, nil
			}
			if now.Sub(since) < refreshAfter {
				return Claim{State: Seen, Owner: queue}, nil
			}
		}
		ok, err := r.TakeOver(ctx, queue, taskID, Claim{value: v})
		if err != nil || ok {
			return Claim{State: Seen, Owner: queue}, err
		}
		// The entry changed meanwhile (another queue took it, or a claim renewed it): read it again.
		if v, err = r.rdb.Get(ctx, rediskeys.Pair(taskID)).Result(); err != nil {
			return Claim{}, fmt.Errorf("pairs: reading %s: %w", taskID, err)
		}
	}
}

// Now is Redis's time, read once and then followed on this process's clock, so that the claims of
// producers on hosts with clocks apart compare: claim times are in it.
func (r *Registry) Now(ctx context.Context) (time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.synced {
		t, err := r.rdb.Time(ctx).Result()
		if err != nil {
			return time.Time{}, err
		}
		r.offset, r.synced = time.Until(t), true
	}
	return time.Now().Add(r.offset), nil
}

// parseEntry splits a registry entry into its queue and claim time.
func parseEntry(v string) (queue string, since time.Time) {
	i := strings.LastIndexByte(v, '|')
	if i < 0 {
		return v, time.Time{}
	}
	secs, _ := strconv.ParseInt(v[i+1:], 10, 64)
	return v[:i], time.Unix(secs, 0)
}

// takeOverScript gives a pair to another queue while its entry is still the one read. KEYS: the
// pair's. ARGV: entry read, new queue. It returns 1 when it took the pair over.
var takeOverScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
if (redis.call("GET", KEYS[1]) or "") ~= ARGV[1] then return 0 end
redis.call("SET", KEYS[1], ARGV[2] .. "|" .. redis.call("TIME")[1])
return 1
`)

// TakeOver gives the pair of taskID, which c says another queue owns, to queue, unless the owner's
// entry changed since c was read. It is for a pair its owner has nothing for (no job, no dead
// letter: a claim whose enqueue failed, a finished job whose record expired): it is Seen from then
// on, so its job looks first.
func (r *Registry) TakeOver(ctx context.Context, queue, taskID string, c Claim) (bool, error) {
	n, err := takeOverScript.Run(ctx, r.rdb, []string{rediskeys.Pair(taskID)}, c.value, queue).Int()
	if err != nil {
		return false, fmt.Errorf("pairs: taking over %s: %w", taskID, err)
	}
	return n == 1, nil
}

// releaseScript releases the pairs a queue owns, or that no queue owns (a dead letter from before
// the registry). KEYS: the pairs'. ARGV: the queue, then the task ids. It returns how many
// were released.
var releaseScript = redis.NewScript(`
local n = 0
for i = 1, #KEYS do
  local v = redis.call("GET", KEYS[i])
  if not v or string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. "|" then
    redis.call("SET", KEYS[i], "")
    n = n + 1
  end
end
return n
`)

// Release gives up queue's ownership of the pairs of taskIDs, so that they may be queued again, on
// any queue, as Seen (with a look-up first): a purged dead letter's pair may have been activated by
// an attempt whose outcome was unknown. A pair the registry does not know (queued before it
// existed) is recorded as released, for the same reason. Pairs another queue owns are left alone.
func (r *Registry) Release(ctx context.Context, queue string, taskIDs []string) (int, error) {
	if len(taskIDs) == 0 {
		return 0, nil
	}
	keys := make([]string, len(taskIDs))
	args := make([]any, 0, len(taskIDs)+1)
	args = append(args, queue)
	for i, id := range taskIDs {
		keys[i] = rediskeys.Pair(id)
		args = append(args, id)
	}
	n, err := releaseScript.Run(ctx, r.rdb, keys, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("pairs: releasing %d pairs: %w", len(taskIDs), err)
	}
	return n, nil
}
