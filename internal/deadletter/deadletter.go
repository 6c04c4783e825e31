// Package deadletter is activator's store of jobs that need a person: each entry keeps the original
// activation request, the reason, the last error, the attempt count and when it failed, until an
// operator requeues or purges it. Unlike asynq's archive, which holds 10,000 tasks per queue and trims
// the oldest silently, the store keeps everything unless retention is configured.
package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// Entry is one dead letter. ID is the job's task id, so a pair has at most one entry.
type Entry struct {
	ID             string                    `json:"id"`
	UserID         string                    `json:"userId"`
	IntegrationID  string                    `json:"integrationId"`
	Reason         tasks.Reason              `json:"reason"`
	Error          string                    `json:"error"`
	Attempts       int                       `json:"attempts"`
	FailedAt       time.Time                 `json:"failedAt"`
	DeadLetteredAt time.Time                 `json:"deadLetteredAt"`
	Queue          string                    `json:"queue"`
	Batch          string                    `json:"batch,omitempty"`
	Request        versori.ActivationRequest `json:"request"`
	// Secrets are the request's credentials sealed as the job held them (tasks.Payload.Secrets);
	// the request holds tasks.Withheld in their place. No secret: it opens only with the key.
	Secrets string `json:"secrets,omitempty"`
	// Op is the job's operation ("" activates), and Seq its number in its pair's order: a requeue
	// queues the same operation under the same task id, so that one enqueued after a later
	// operation on the pair ends superseded.
	Op  tasks.Op `json:"op,omitempty"`
	Seq int64    `json:"seq,omitempty"`
	// EndUser is the end user the job creates should the API not know them; their primary
	// connection's credentials are sealed in Secrets with the request's (withheld here), or in plain
	// text when the job held them so.
	EndUser *tasks.EndUser `json:"endUser,omitempty"`
}

// Keep copies into e what a requeue needs of the job's payload p: its request, batch, sealed
// secrets, operation, number and end user.
func (e *Entry) Keep(p tasks.Payload) {
	e.Request, e.Batch, e.Secrets, e.Op, e.Seq, e.EndUser = p.Request, p.Batch, p.Secrets, p.Op, p.Seq, p.EndUser
}

// Payload is the payload that queues e's job again as it was (without its enqueue time, retry
// limit or reconcile flag, which a requeue sets anew).
func (e Entry) Payload() tasks.Payload {
	return tasks.Payload{Request: e.Request, Batch: e.Batch, Secrets: e.Secrets, Op: e.Op, Seq: e.Seq, EndUser: e.EndUser}
}

// Store keeps the dead letters of one queue in Redis. It is safe for concurrent use, also across
// processes: every change is one atomic script.
type Store struct {
	rdb  redis.UniversalClient
	keys keys
}

// keys are the store's Redis keys. They share the queue's hash tag with asynq's own keys, so on a
// Redis Cluster the store lives on the queue's node.
type keys struct {
	entries string // hash: id -> entry JSON
	byTime  string // sorted set: id scored by dead-lettered time (ms)
	prefix  string // + reason: sorted set of that reason's ids
}

func (k keys) reason(r tasks.Reason) string { return k.prefix + string(r) }

// NewStore returns the store for queue.
func NewStore(rdb redis.UniversalClient, queue string) *Store {
	return &Store{rdb: rdb, keys: keys{entries: rediskeys.DeadLetters(queue), byTime: rediskeys.DeadLettersByTime(queue),
		prefix: rediskeys.DeadLettersByReasonPrefix(queue)}}
}

// addScript stores an entry, replacing an earlier one for the same id, and returns 1 when the id was
// new. KEYS: entries, byTime, new reason set, old reason prefix, and optionally a guard key. ARGV:
// id, json, score, reason, and what the guard key must hold ("exists": to exist; "member": the id
// as a member, as a sorted set); when it does not, nothing is stored and it returns -1.
var addScript = redis.NewScript(`
if ARGV[5] == "exists" and redis.call("EXISTS", KEYS[5]) == 0 then return -1 end
if ARGV[5] == "member" and not redis.call("ZSCORE", KEYS[5], ARGV[1]) then return -1 end
local old = redis.call("HGET", KEYS[1], ARGV[1])
if old then
  local ok, e = pcall(cjson.decode, old)
  if ok and e.reason and e.reason ~= ARGV[4] then
    redis.call("ZREM", KEYS[4] .. e.reason, ARGV[1])
  end
end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[2])
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[1])
redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1])
if old then return 0 end
return 1
`)

// Add stores e, replacing any earlier entry with its id, and reports whether the id was new.
func (s *Store) Add(ctx context.Context, e Entry) (bool, error) {
	added, _, err := s.add(ctx, e, "", "")
	return added, err
}

// AddWhile stores e as Add does, but only while key exists, in one atomic step; it reports false
// when key is gone. The archive sweep stores an archived task's dead letter only while the task is
// still archived, so that one purged meanwhile is not stored again. key must live on the store's
// Redis Cluster slot (the queue's hash tag).
func (s *Store) AddWhile(ctx context.Context, e Entry, key string) (bool, error) {
	added, _, err := s.add(ctx, e, key, "exists")
	return added, err
}

// ErrNotHeld is AddWhileMember's error when the guard set no longer holds the entry's id.
var ErrNotHeld = errors.New("deadletter: the guard no longer holds the entry's id")

// AddWhileMember stores e as Add does, but only while the sorted set set holds e.ID, in one atomic
// step, and returns ErrNotHeld otherwise. A handler stores its job's dead letter only while its run
// still holds the task's lease: once asynq has taken the task back (the job's deadline passed, the
// lease was lost), a retry of it may already be running and decide otherwise. set must live on the
// store's Redis Cluster slot.
func (s *Store) AddWhileMember(ctx context.Context, e Entry, set string) (bool, error) {
	added, held, err := s.add(ctx, e, set, "member")
	if err == nil && !held {
		err = ErrNotHeld
	}
	return added, err
}

// add stores e, guarded by key as mode says ("" for no guard), and reports whether the id was new
// and whether the guard held.
func (s *Store) add(ctx context.Context, e Entry, guard, mode string) (added, held bool, err error) {
	if e.ID == "" {
		return false, false, errors.New("deadletter: entry has no id")
	}
	if _, err := tasks.ParseReason(string(e.Reason)); err != nil {
		return false, false, fmt.Errorf("deadletter: %w", err)
	}
	if e.DeadLetteredAt.IsZero() {
		e.DeadLetteredAt = time.Now().UTC()
	}
	if e.FailedAt.IsZero() {
		e.FailedAt = e.DeadLetteredAt
	}
	if e.UserID == "" && e.IntegrationID == "" {
		// A payload that could not be read names no pair; its task id does, for listing and
		// counting. The request stays as read, so that a requeue of it is refused.
		if pair, ok := tasks.PairOf(e.ID); ok {
			e.UserID, e.IntegrationID = pair.UserID, pair.IntegrationID
		}
	}
	b, err := json.Marshal(e)
	if err != nil {
		return false, false, fmt.Errorf("deadletter: encoding entry: %w", err)
	}
	keys := []string{s.keys.entries, s.keys.byTime, s.keys.reason(e.Reason), s.keys.prefix}
	if guard != "" {
		keys = append(keys, guard)
	}
	n, err := addScript.Run(ctx, s.rdb, keys, e.ID, b, e.DeadLetteredAt.UnixMilli(), string(e.Reason), mode).Int()
	if err != nil {
		return false, false, fmt.Errorf("deadletter: storing %s: %w", e.ID, err)
	}
	return n == 1, n >= 0, nil
}

// Has reports, for each id, whether it has an entry. It costs one round trip however many ids.
func (s *Store) Has(ctx context.Context, ids []string) ([]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.keys.entries, ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("deadletter: looking up %d ids: %w", len(ids), err)
	}
	out := make([]bool, len(ids))
	for i, v := range vals {
		out[i] = v != nil
	}
	return out, nil
}

// Get returns the entries with the given ids; ids without an entry are left out.
func (s *Store) Get(ctx context.Context, ids ...string) ([]Entry, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	vals, err := s.rdb.HMGet(ctx, s.keys.entries, ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("deadletter: reading %d entries: %w", len(ids), err)
	}
	out := make([]Entry, 0, len(vals))
	for i, v := range vals {
		str, ok := v.(string)
		if !ok {
			continue
		}
		var e Entry
		if err := json.Unmarshal([]byte(str), &e); err != nil {
			return nil, fmt.Errorf("deadletter: entry %s is corrupt: %w", ids[i], err)
		}
		out = append(out, e)
	}
	return out, nil
}

// Count returns how many entries there are, of reason r, or of all reasons when r is "".
func (s *Store) Count(ctx context.Context, r tasks.Reason) (int64, error) {
	var (
		n   int64
		err error
	)
	if r == "" {
		n, err = s.rdb.HLen(ctx, s.keys.entries).Result()
	} else {
		n, err = s.rdb.ZCard(ctx, s.keys.reason(r)).Result()
	}
	if err != nil {
		return 0, fmt.Errorf("deadletter: counting: %w", err)
	}
	return n, nil
}

// CountByReason returns the number of entries of every reason.
func (s *Store) CountByReason(ctx context.Context) (map[tasks.Reason]int64, error) {
	pipe := s.rdb.Pipeline()
	cmds := make(map[tasks.Reason]*redis.IntCmd)
	for _, r := range tasks.Reasons() {
		cmds[r] = pipe.ZCard(ctx, s.keys.reason(r))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("deadletter: counting by reason: %w", err)
	}
	out := make(map[tasks.Reason]int64, len(cmds))
	for r, c := range cmds {
		out[r] = c.Val()
	}
	return out, nil
}

// pageSize is how many entries one round trip of Each reads.
const pageSize = 500

func (s *Store) index(r tasks.Reason) string {
	if r == "" {
		return s.keys.byTime
	}
	return s.keys.reason(r)
}

// Each calls fn for every entry of reason r (all reasons when r is ""), oldest first, reading a page
// at a time so that memory stays flat however many there are. It stops at fn's first error. fn must
// not remove entries; to change many, take their IDs first.
func (s *Store) Each(ctx context.Context, r tasks.Reason, fn func(Entry) error) error {
	index := s.index(r)
	for start := int64(0); ; start += pageSize {
		ids, err := s.rdb.ZRange(ctx, index, start, start+pageSize-1).Result()
		if err != nil {
			return fmt.Errorf("deadletter: listing: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		entries, err := s.Get(ctx, ids...)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := fn(e); err != nil {
				return err
			}
		}
		if len(ids) < pageSize {
			return nil
		}
	}
}

// IDs returns the ids of every entry of reason r (all reasons when r is ""), oldest first.
func (s *Store) IDs(ctx context.Context, r tasks.Reason) ([]string, error) {
	ids, err := s.rdb.ZRange(ctx, s.index(r), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("deadletter: listing ids: %w", err)
	}
	return ids, nil
}

// removeScript deletes entries by id and returns how many existed. KEYS: entries, byTime, reason
// prefix. ARGV: ids.
var removeScript = redis.NewScript(`
local n = 0
for _, id in ipairs(ARGV) do
  local old = redis.call("HGET", KEYS[1], id)
  if old then
    local ok, e = pcall(cjson.decode, old)
    if ok and e.reason then redis.call("ZREM", KEYS[3] .. e.reason, id) end
    redis.call("HDEL", KEYS[1], id)
    n = n + 1
  end
  redis.call("ZREM", KEYS[2], id)
end
return n
`)

// Remove deletes the entries with the given ids and returns how many there were.
func (s *Store) Remove(ctx context.Context, ids ...string) (int, error) {
	total := 0
	for len(ids) > 0 {
		n := min(len(ids), pageSize)
		args := make([]any, n)
		for i, id := range ids[:n] {
			args[i] = id
		}
		got, err := removeScript.Run(ctx, s.rdb, []string{s.keys.entries, s.keys.byTime, s.keys.prefix}, args...).Int()
		if err != nil {
			return total, fmt.Errorf("deadletter: removing: %w", err)
		}
		total += got
		ids = ids[n:]
	}
	return total, nil
}

// removeEntryScript deletes an entry only while it is the one a caller read (same dead-lettered
// time). KEYS: entries, byTime, reason prefix. ARGV: id, deadLetteredAt as JSON holds it.
var removeEntryScript = redis.NewScript(`
local old = redis.call("HGET", KEYS[1], ARGV[1])
if not old then return 0 end
local ok, e = pcall(cjson.decode, old)
if not ok or e.deadLetteredAt ~= ARGV[2] then return 0 end
if e.reason then redis.call("ZREM", KEYS[3] .. e.reason, ARGV[1]) end
redis.call("HDEL", KEYS[1], ARGV[1])
redis.call("ZREM", KEYS[2], ARGV[1])
return 1
`)

// RemoveEntry deletes e, as read from the store, and reports whether it did: a newer entry with the
// same id (the requeued job was dead-lettered again meanwhile) is left, so that a requeue never
// deletes the dead letter of the job it queued.
func (s *Store) RemoveEntry(ctx context.Context, e Entry) (bool, error) {
	n, err := removeEntryScript.Run(ctx, s.rdb, []string{s.keys.entries, s.keys.byTime, s.keys.prefix},
		e.ID, e.DeadLetteredAt.UTC().Format(time.RFC3339Nano)).Int()
	if err != nil {
		return false, fmt.Errorf("deadletter: removing %s: %w", e.ID, err)
	}
	return n == 1, nil
}

// Rename moves the entry from to the id to, unless to has an entry already (then from's is only
// removed: a pair has one dead letter). It is for ids written before task ids were canonical.
func (s *Store) Rename(ctx context.Context, from, to string) error {
	es, err := s.Get(ctx, from, to)
	if err != nil {
		return err
	}
	if len(es) == 1 && es[0].ID == from {
		e := es[0]
		e.ID = to
		if c, err := e.Request.Canonical(); err == nil {
			e.Request = c
			e.IntegrationID = c.IntegrationID
		}
		if _, err := s.Add(ctx, e); err != nil {
			return err
		}
	}
	_, err = s.Remove(ctx, from)
	return err
}

// Trim applies a retention policy: it removes entries dead-lettered before olderThan (when not zero)
// and the oldest entries beyond maxEntries (when positive), and returns the ids it removed, whose
// pairs the caller should release (a pair that lost its dead letter must not stay owned by a queue
// that has nothing for it).
func (s *Store) Trim(ctx context.Context, olderThan time.Time, maxEntries int64) ([]string, error) {
	var ids []string
	if !olderThan.IsZero() {
		old, err := s.rdb.ZRangeByScore(ctx, s.keys.byTime, &redis.ZRangeBy{Min: "-inf", Max: "(" + fmt.Sprint(olderThan.UnixMilli())}).Result()
		if err != nil {
			return nil, fmt.Errorf("deadletter: trimming: %w", err)
		}
		ids = append(ids, old...)
	}
	if maxEntries > 0 {
		n, err := s.rdb.ZCard(ctx, s.keys.byTime).Result()
		if err != nil {
			return nil, fmt.Errorf("deadletter: trimming: %w", err)
		}
		if over := n - int64(len(ids)) - maxEntries; over > 0 {
			more, err := s.rdb.ZRange(ctx, s.keys.byTime, int64(len(ids)), int64(len(ids))+over-1).Result()
			if err != nil {
				return nil, fmt.Errorf("deadletter: trimming: %w", err)
			}
			ids = append(ids, more...)
		}
	}
	if _, err := s.Remove(ctx, ids...); err != nil {
		return nil, err
	}
	return ids, nil
}

// rewriteScript replaces an entry only if it is still the one read. KEYS: entries. ARGV: id, the
// entry as read, the new entry. Returns 1 when replaced.
var rewriteScript = redis.NewScript(`
if redis.call("HGET", KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call("HSET", KEYS[1], ARGV[1], ARGV[3])
return 1
`)

// Rewrite changes the entry id as fn says, fn returning the new entry and whether it changed it, in
// a compare-and-set: an entry changed meanwhile (requeued, dead-lettered again) is left, and
// Rewrite reports false. Only fields other than the id and reason may change.
func (s *Store) Rewrite(ctx context.Context, id string, fn func(Entry) (Entry, bool, error)) (bool, error) {
	old, err := s.rdb.HGet(ctx, s.keys.entries, id).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("deadletter: reading %s: %w", id, err)
	}
	var e Entry
	if err := json.Unmarshal([]byte(old), &e); err != nil {
		return false, fmt.Errorf("deadletter: entry %s is corrupt: %w", id, err)
	}
	ne, changed, err := fn(e)
	if err != nil || !changed {
		return false, err
	}
	if ne.ID != e.ID || ne.Reason != e.Reason {
		return false, errors.New("deadletter: Rewrite may not change an entry's id or reason")
	}
	b, err := json.Marshal(ne)
	if err != nil {
		return false, fmt.Errorf("deadletter: encoding entry: %w", err)
	}
	n, err := rewriteScript.Run(ctx, s.rdb, []string{s.keys.entries}, id, old, b).Int()
	if err != nil {
		return false, fmt.Errorf("deadletter: rewriting %s: %w", id, err)
	}
	return n == 1, nil
}
