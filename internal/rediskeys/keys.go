// Package rediskeys builds every Redis key activator reads or writes: its own stores' keys and the
// keys of asynq's private layout it depends on. Nothing else spells a key, so that one file shows
// what lives in a user's Redis and one test (TestAsynqLayout) catches an asynq upgrade that moves it.
//
// The strings are a stored format: workers of the previous release and data already in users'
// Redis use them, so none may change. A queue's keys carry the queue's hash tag ({<queue>}), as
// asynq's own do, so that on a Redis Cluster a queue and everything activator keeps about it share
// one node and a script may name them together.
package rediskeys

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// queue is the start of activator's keys of one queue.
func queue(q string) string { return "activator:{" + q + "}:" }

// Batch is the hash of one batch's outcome counters.
func Batch(q, id string) string { return queue(q) + "batch:" + id }

// BatchCompletions is the sorted set of one batch's recent completions: a member per counter flush
// that counted jobs ending ("<jobs>:<nonce>"), scored by when it was written (unix ms), for the
// batch's recent rate. "batch-completions:" cannot begin a Batch key, whatever the batch ids.
func BatchCompletions(q, id string) string { return queue(q) + "batch-completions:" + id }

// DeadLetters is the dead-letter store's hash of task id -> entry JSON.
func DeadLetters(q string) string { return queue(q) + "dlq" }

// DeadLettersByTime is the sorted set of dead-lettered task ids, scored by when they were stored (ms).
func DeadLettersByTime(q string) string { return DeadLetters(q) + ":time" }

// DeadLettersByReasonPrefix starts each of DeadLettersByReason's keys; the store's scripts take it
// to reach the set of an entry's previous reason.
func DeadLettersByReasonPrefix(q string) string { return DeadLetters(q) + ":reason:" }

// DeadLettersByReason is the sorted set of the ids dead-lettered for reason, scored as DeadLettersByTime.
func DeadLettersByReason(q, reason string) string { return DeadLettersByReasonPrefix(q) + reason }

// DeadLettersPattern matches DeadLetters of every queue, for SCAN.
const DeadLettersPattern = "activator:{*}:dlq"

// QueueOfDeadLetters is the queue whose DeadLetters key is key, and false when key is not one.
func QueueOfDeadLetters(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "activator:{")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "}:dlq")
}

// PausedReason holds why the queue is paused (queuestate's reasons), beside asynq's AsynqPaused.
func PausedReason(q string) string { return queue(q) + "paused_reason" }

// ProbeUser holds an end user whose per-user token the API accepted: the signing-key probe asks about
// them, since an API may refuse a token for an end user it does not know as it refuses a bad key.
func ProbeUser(q string) string { return queue(q) + "probe_user" }

// Backoff holds until when (unix ms) Versori told the queue's workers to back off.
func Backoff(q string) string { return queue(q) + "backoff_until" }

// RateLimit is the queue's rate limiter state. The key and what it holds are those of
// github.com/go-redis/redis_rate (which earlier releases used, and which adds "rate:"), so that old
// and new workers share one limit while a deploy rolls.
func RateLimit(q string) string { return "rate:" + queue(q) + "ratelimit" }

// RedisRunID is the run id of the Redis server the queue's workers last saw (redisguard).
func RedisRunID(q string) string { return queue(q) + "redis-run-id" }

// pairsPrefix starts every key of the pair registry; its hash tag keeps them on one Cluster node.
const pairsPrefix = "activator:{pairs}:"

// Pair is the pair registry's entry of a task id: "<queue>|<unix seconds of the claim>". A key per
// pair, rather than fields of a few big hashes: a claim is then one SET NX in constant time, where a
// hash field's insert grew and scanned its hash, which cost a million-row file about a third more
// of Redis's time.
func Pair(taskID string) string { return pairsPrefix + taskID }

// PairOrder is the hash in which internal/pairorder keeps the order of a pair's operations, taskID
// being the pair's TaskID: "seq" and "op" of the last operation enqueued, and "run" and "until" of
// the job that holds the pair's turn. A pair that only ever had its first activation has none.
func PairOrder(taskID string) string { return pairsPrefix + "order:" + taskID }

// PairsBackfilled marks a Redis whose pair registry holds the pairs queued before it existed.
const PairsBackfilled = pairsPrefix + "backfilled"

// WebhookID is the intake's record of a webhook id sent on route with the credential whose id is
// credential. It is hashed, so that the key holds neither the id's bytes nor anything of the
// credential, whatever their length or characters; '|' cannot occur in a route or a credential id,
// so no two scopes join to the same string. No hash tag: the records spread over a Cluster's nodes.
func WebhookID(route, credential, id string) string {
	sum := sha256.Sum256([]byte(route + "|" + credential + "|" + id))
	return webhookIDPrefix + hex.EncodeToString(sum[:])
}

const webhookIDPrefix = "activator:intake:whid:"

// WebhookIDDigest is the hex digest of the WebhookID key key, and false when key is not one.
func WebhookIDDigest(key string) (string, bool) { return strings.CutPrefix(key, webhookIDPrefix) }

// TestClaim, in database 0, marks database db as claimed by a test (internal/testutil) or by the
// bench, which flush it.
func TestClaim(db int) string { return "activator-test:claim:" + strconv.Itoa(db) }

// TestOwned, in a database tests use, says that the database holds only what tests wrote: a test
// flushes a database only when it is empty or holds this key.
const TestOwned = "activator-test:owned"

// asynq's layout. asynq keeps it in its internal/base package, which no one outside asynq may import,
// so it is copied here from AsynqVersion, and TestAsynqLayout checks the copy against a real asynq.

// AsynqVersion is the asynq release whose private layout the Asynq functions copy. The test that
// reads the module's build info fails when asynq is upgraded, until this file has been checked
// against the new release.
const AsynqVersion = "v0.26.0"

// asynqQueue is asynq's base.QueueKeyPrefix.
func asynqQueue(q string) string { return "asynq:{" + q + "}:" }

// AsynqTask is the hash holding a task's record (base.TaskKey).
func AsynqTask(q, id string) string { return asynqQueue(q) + "t:" + id }

// AsynqResultField is the field of AsynqTask holding the task's result, which asynq's
// Inspector reads as TaskInfo.Result; the results writer sets it directly.
const AsynqResultField = "result"

// AsynqTasksPattern matches the AsynqTask keys of every queue whose task id starts with idPrefix, for SCAN.
func AsynqTasksPattern(idPrefix string) string { return "asynq:{*}:t:" + idPrefix + "*" }

// AsynqTaskOf is the queue and task id of the AsynqTask key key, and false when key is not one.
func AsynqTaskOf(key string) (q, id string, ok bool) {
	rest, ok := strings.CutPrefix(key, "asynq:{")
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "}:t:")
}

// AsynqPending is the list of the queue's task ids ready to run (base.PendingKey); KEDA scales on its length.
func AsynqPending(q string) string { return asynqQueue(q) + "pending" }

// AsynqActive is the list of the queue's task ids being run (base.ActiveKey).
func AsynqActive(q string) string { return asynqQueue(q) + "active" }

// AsynqLease is the sorted set of the queue's active task ids, scored by when their lease ends
// (base.LeaseKey); a task is in it while a worker's run of it holds the lease.
func AsynqLease(q string) string { return asynqQueue(q) + "lease" }

// AsynqRetry is the sorted set of the queue's task ids waiting to be retried (base.RetryKey).
func AsynqRetry(q string) string { return asynqQueue(q) + "retry" }

// AsynqScheduled is the sorted set of the queue's task ids waiting for their processAt
// (base.ScheduledKey).
func AsynqScheduled(q string) string { return asynqQueue(q) + "scheduled" }

// AsynqArchived is the sorted set of the queue's archived task ids (base.ArchivedKey).
func AsynqArchived(q string) string { return asynqQueue(q) + "archived" }

// AsynqMsgField is the field of AsynqTask holding the task's message, asynq's protobuf TaskMessage
// (its payload is field AsynqPayloadFieldNumber).
const AsynqMsgField = "msg"

// AsynqPayloadFieldNumber is the protobuf field number of TaskMessage's payload.
const AsynqPayloadFieldNumber = 2

// AsynqStateField is the field of AsynqTask holding the task's state: "pending", "active",
// "scheduled", "retry", "archived", "completed".
const AsynqStateField = "state"

// AsynqPaused exists while the queue is paused (base.PausedKey).
func AsynqPaused(q string) string { return asynqQueue(q) + "paused" }

// AsynqProcessed counts the queue's tasks processed on day, in UTC (base.ProcessedKey); asynq's
// scripts that end a task's run increment it.
func AsynqProcessed(q string, day time.Time) string {
	return asynqQueue(q) + "processed:" + day.UTC().Format(time.DateOnly)
}

// AsynqQueues is the set of every queue's name asynq has seen (base.AllQueues).
const AsynqQueues = "asynq:queues"

// AsynqKind says which of a queue's asynq keys a key is, as far as recognising asynq's scripts by
// the keys they name needs: the job-end hook (worker/jobend.go) takes a script naming a queue's
// active list, lease set and a task hash, but not its pending list, for one that ends a task's run.
type AsynqKind int

// The kinds of key AsynqKindOf tells apart.
const (
	AsynqOtherKind AsynqKind = iota // not one of the below, or not asynq's
	AsynqTaskKind
	AsynqPendingKind
	AsynqActiveKind
	AsynqLeaseKind
	AsynqRetryKind
)

// AsynqKindOf is the kind of key.
func AsynqKindOf(key string) AsynqKind {
	rest, ok := strings.CutPrefix(key, "asynq:{")
	if !ok {
		return AsynqOtherKind
	}
	_, rest, ok = strings.Cut(rest, "}:")
	switch {
	case !ok:
		return AsynqOtherKind
	case strings.HasPrefix(rest, "t:"):
		return AsynqTaskKind
	case rest == "pending":
		return AsynqPendingKind
	case rest == "active":
		return AsynqActiveKind
	case rest == "lease":
		return AsynqLeaseKind
	case rest == "retry":
		return AsynqRetryKind
	}
	return AsynqOtherKind
}
