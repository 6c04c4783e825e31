package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/tasks"
)

// ReencryptSummary counts what Reencrypt did.
type ReencryptSummary struct {
	Tasks, DeadLetters int // sealed again with the current key (or sealed for the first time)
	// Current are tasks and dead letters already sealed with the current key, or holding no
	// credentials: nothing to do.
	Current int
	// Running are tasks a worker holds: they cannot be rewritten now; they end done, dead-lettered
	// (then a re-run reseals the dead letter) or retried (then a re-run reseals the task). Changed
	// are tasks and dead letters that changed between the read and the write: re-run.
	Running, Changed int
	// RunningIDs are the ids of Running tasks (the first 100).
	RunningIDs []string
	// Unreadable are tasks and dead letters whose secrets no key opens (their key id is not in the
	// keyring, or they do not authenticate): they are left as they are.
	Unreadable    int
	UnreadableIDs []string // the first 100
}

// Done reports whether nothing is left sealed under another key: the old keys may go.
func (s ReencryptSummary) Done() bool { return s.Running == 0 && s.Changed == 0 && s.Unreadable == 0 }

// maxListedIDs bounds the ids a summary lists.
const maxListedIDs = 100

// casMsgScript sets a task's message only if it is still the one read and no worker holds the
// task. KEYS: the task's hash. ARGV: the message read, the new one. Returns 1 when set, 0 when the
// message changed, -1 when the task is active.
var casMsgScript = redis.NewScript(`
if redis.call("HGET", KEYS[1], "` + rediskeys.AsynqMsgField + `") ~= ARGV[1] then return 0 end
if redis.call("HGET", KEYS[1], "` + rediskeys.AsynqStateField + `") == "active" then return -1 end
redis.call("HSET", KEYS[1], "` + rediskeys.AsynqMsgField + `", ARGV[2])
return 1
`)

// Reencrypt seals with the keyring's current key the credentials of every task of the queue that
// no worker holds (pending, scheduled, retry, archived) and of every dead letter, where they are
// sealed under another key or stored in plain text. Each task's message is rewritten in place,
// only its payload, in a compare-and-set that leaves a task a worker took meanwhile. Completed tasks
// are left: their credentials will never be sent again, and they expire with their retention.
func (q *Queue) Reencrypt(ctx context.Context) (ReencryptSummary, error) {
	var sum ReencryptSummary
	if q.cfg.Keys.Current() == "" {
		return sum, fmt.Errorf("reencrypt needs keys: set %s with the new key first", tasks.EncryptionKeysVar)
	}
	unreadable := func(id string) {
		sum.Unreadable++
		if len(sum.UnreadableIDs) < maxListedIDs {
			sum.UnreadableIDs = append(sum.UnreadableIDs, id)
		}
	}
	queue := q.cfg.Queue
	var ids []string
	pending, err := q.rdb.LRange(ctx, rediskeys.AsynqPending(queue), 0, -1).Result()
	if err != nil {
		return sum, fmt.Errorf("listing pending tasks: %w", err)
	}
	ids = append(ids, pending...)
	for _, set := range []string{rediskeys.AsynqScheduled(queue), rediskeys.AsynqRetry(queue), rediskeys.AsynqArchived(queue)} {
		more, err := q.rdb.ZRange(ctx, set, 0, -1).Result()
		if err != nil {
			return sum, fmt.Errorf("listing %s: %w", set, err)
		}
		ids = append(ids, more...)
	}
	active, err := q.rdb.LRange(ctx, rediskeys.AsynqActive(queue), 0, -1).Result()
	if err != nil {
		return sum, fmt.Errorf("listing active tasks: %w", err)
	}
	ids = append(ids, active...)
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		st, err := q.reencryptTask(ctx, id)
		switch {
		case errors.Is(err, tasks.ErrSecretUnreadable):
			unreadable(id)
		case err != nil:
			return sum, err
		case st == taskResealed:
			sum.Tasks++
		case st == taskCurrent:
			sum.Current++
		case st == taskRunning:
			sum.Running++
			if len(sum.RunningIDs) < maxListedIDs {
				sum.RunningIDs = append(sum.RunningIDs, id)
			}
		case st == taskChanged:
			sum.Changed++
		}
	}
	dlIDs, err := q.store.IDs(ctx, "")
	if err != nil {
		return sum, err
	}
	for _, id := range dlIDs {
		var current, bad bool
		ok, err := q.store.Rewrite(ctx, id, func(e deadletter.Entry) (deadletter.Entry, bool, error) {
			p := e.Payload() // the end user's credentials are sealed with the request's
			changed, err := p.Reseal(q.cfg.Keys)
			if errors.Is(err, tasks.ErrSecretUnreadable) {
				bad = true
				return e, false, nil
			}
			if err != nil || !changed {
				current = err == nil
				return e, false, err
			}
			e.Keep(p)
			return e, true, nil
		})
		switch {
		case err != nil:
			return sum, err
		case bad:
			unreadable(id)
		case current:
			sum.Current++
		case ok:
			sum.DeadLetters++
		default:
			sum.Changed++ // gone or changed between the read and the write
		}
	}
	return sum, nil
}

type taskState int

const (
	taskCurrent taskState = iota
	taskResealed
	taskRunning
	taskChanged
)

// reencryptTask reseals one task's payload in place.
func (q *Queue) reencryptTask(ctx context.Context, id string) (taskState, error) {
	key := rediskeys.AsynqTask(q.cfg.Queue, id)
	vals, err := q.rdb.HMGet(ctx, key, rediskeys.AsynqMsgField, rediskeys.AsynqStateField).Result()
	if err != nil {
		return 0, fmt.Errorf("reading task %s: %w", id, err)
	}
	msg, ok := vals[0].(string)
	if !ok {
		return taskChanged, nil // gone since it was listed
	}
	payload, err := messagePayload([]byte(msg))
	if err != nil {
		return 0, fmt.Errorf("task %s: %w", id, err)
	}
	p, err := tasks.DecodePayload(payload)
	if err != nil {
		return taskCurrent, nil // not an activation job's payload this release reads: the worker dead-letters it
	}
	changed, err := p.Reseal(q.cfg.Keys)
	if err != nil || !changed {
		return taskCurrent, err
	}
	if state, _ := vals[1].(string); state == "active" {
		return taskRunning, nil
	}
	// Re-encoded through NewTask's encoder, so that the payload is what a producer would write.
	t, err := tasks.NewTask(p)
	if err != nil {
		return 0, fmt.Errorf("task %s: %w", id, err)
	}
	newMsg, err := replacePayload([]byte(msg), t.Payload())
	if err != nil {
		return 0, fmt.Errorf("task %s: %w", id, err)
	}
	n, err := casMsgScript.Run(ctx, q.rdb, []string{key}, msg, newMsg).Int()
	switch {
	case err != nil:
		return 0, fmt.Errorf("rewriting task %s: %w", id, err)
	case n == -1:
		return taskRunning, nil
	case n == 0:
		return taskChanged, nil
	}
	return taskResealed, nil
}

// messagePayload is the payload of asynq's TaskMessage msg.
func messagePayload(msg []byte) ([]byte, error) {
	var payload []byte
	err := eachField(msg, func(num protowire.Number, typ protowire.Type, field, value []byte) {
		if num == rediskeys.AsynqPayloadFieldNumber && typ == protowire.BytesType {
			payload = value
		}
	})
	return payload, err
}

// replacePayload returns msg with its payload field replaced by payload, every other field kept as
// it is, in its place.
func replacePayload(msg, payload []byte) ([]byte, error) {
	out := make([]byte, 0, len(msg)+len(payload))
	replaced := false
	err := eachField(msg, func(num protowire.Number, typ protowire.Type, field, _ []byte) {
		if num == rediskeys.AsynqPayloadFieldNumber && typ == protowire.BytesType {
			if !replaced {
				out = protowire.AppendTag(out, num, protowire.BytesType)
				out = protowire.AppendBytes(out, payload)
				replaced = true
			}
			return
		}
		out = append(out, field...)
	})
	if err == nil && !replaced {
		err = errors.New("asynq message has no payload field")
	}
	return out, err
}

// eachField calls fn with every field of the protobuf message msg: its number, wire type, all of its
// bytes (tag included) and, for a bytes field, its value.
func eachField(msg []byte, fn func(num protowire.Number, typ protowire.Type, field, value []byte)) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return fmt.Errorf("asynq message: %w", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if m < 0 {
			return fmt.Errorf("asynq message: %w", protowire.ParseError(m))
		}
		var value []byte
		if typ == protowire.BytesType {
			value, _ = protowire.ConsumeBytes(msg[n:])
		}
		fn(num, typ, msg[:n+m], value)
		msg = msg[n+m:]
	}
	return nil
}
