// Package pairorder orders the operations on each pair, so that a pair ends in the state of the
// operation enqueued last, whatever order workers take the jobs in.
//
// A producer takes a Ticket for each operation (Next): the operation's number within its pair,
// from which its task id follows (tasks.TaskIDAt). A pair's first activation is number 0 and writes
// nothing, so that pairs that only ever activate cost no key; an operation that repeats the pair's
// last one (an activation after an activation or an update, a deactivation after a deactivation) gets
// the last one's ticket, so that its task id conflicts with the task already queued, as re-running a
// file always did. Any other operation gets the next number.
//
// A worker takes the pair's turn before every attempt (Begin) and gives it back after (End). Begin
// says Superseded when a later operation was enqueued (the job ends doing nothing), and Busy while
// another run holds the turn or a call of an earlier run may still commit at the API (the job waits
// without using an attempt). So at most one job calls the API for a pair at a time, and a job never
// looks at a pair while an earlier job's POST, PUT or DELETE whose answer was lost may still land.
//
// Everything lives in one hash per pair (rediskeys.PairOrder), changed only by the scripts below,
// which read Redis's clock: the workers' clocks do not matter.
package pairorder

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// Order is the operation order of the pairs kept in one Redis. It is safe for concurrent use.
type Order struct {
	rdb redis.UniversalClient
}

// New returns the order kept in rdb.
func New(rdb redis.UniversalClient) *Order { return &Order{rdb: rdb} }

// Ticket is an operation's place in its pair's order.
type Ticket struct {
	// Seq is the operation's number: 0 for the pair's first activation, then 1, 2, ...
	Seq int64
	// TaskID is the task id of the operation's job (tasks.TaskIDAt).
	TaskID string
	// Repeat: the operation repeats the pair's last one, whose ticket this is. Its task, if still
	// queued, running or retained, is the one the producer's enqueue conflicts with.
	Repeat bool
}

// opCode is the one-letter name an operation has in the hash.
func opCode(op tasks.Op) string {
	switch op {
	case tasks.OpUpdate:
		return "u"
	case tasks.OpDeactivate:
		return "d"
	}
	return "a"
}

// nextScript numbers an operation. KEYS: the pair's hash. ARGV: the operation's code. Returns
// {seq, repeat}.
var nextScript = redis.NewScript(`
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local last = redis.call('HGET', KEYS[1], 'op') or 'a'
local op = ARGV[1]
if (op == 'a' and (last == 'a' or last == 'u')) or (op == 'd' and last == 'd') then
	return {seq, 1}
end
seq = seq + 1
redis.call('HSET', KEYS[1], 'seq', seq, 'op', op)
return {seq, 0}
`)

// Next numbers an operation on each of pairs (one round trip per pair, pipelined): the tickets, in
// the order of pairs. A ticket is taken before its job is enqueued; a job that is then never
// enqueued (the producer failed) leaves its number unused, and a later operation takes the next.
func (o *Order) Next(ctx context.Context, op tasks.Op, pairs []versori.Pair) ([]Ticket, error) {
	switch {
	case len(pairs) == 0:
		return nil, nil
	case op == tasks.OpActivate:
		return o.nextActivations(ctx, pairs)
	}
	return o.next(ctx, op, pairs)
}

// nextActivations is Next of activations. Nearly every one repeats its pair's last operation (a
// pair's first activation, a file run again), for which the script writes nothing: a read tells
// its ticket as well, at a third of Redis's time per pair (an HMGET instead of a script), which is
// most of what numbering costs a million-row file. The script numbers only the activations after
// a deactivation. A ticket read is the script's at the moment of the read, as a ticket numbered by
// it is at the moment it ran: a later operation numbered since supersedes either.
func (o *Order) nextActivations(ctx context.Context, pairs []versori.Pair) ([]Ticket, error) {
	cmds := make([]*redis.SliceCmd, len(pairs))
	_, err := o.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, pr := range pairs {
			cmds[i] = p.HMGet(ctx, rediskeys.PairOrder(tasks.TaskID(pr)), "seq", "op")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("pairorder: numbering operations: %w", err)
	}
	out := make([]Ticket, len(pairs))
	var afterDeactivation []int
	for i, c := range cmds {
		v := c.Val()
		if len(v) != 2 {
			return nil, fmt.Errorf("pairorder: numbering operations: unexpected answer %v", v)
		}
		// After a deactivation, or an operation unknown (beginScript), the script numbers it.
		if last, _ := v[1].(string); last != "" && last != opCode(tasks.OpActivate) && last != opCode(tasks.OpUpdate) {
			afterDeactivation = append(afterDeactivation, i)
			continue
		}
		var seq int64
		if s, ok := v[0].(string); ok {
			if seq, err = strconv.ParseInt(s, 10, 64); err != nil {
				return nil, fmt.Errorf("pairorder: numbering operations: bad seq %q: %w", s, err)
			}
		}
		out[i] = Ticket{Seq: seq, TaskID: tasks.TaskIDAt(pairs[i], seq), Repeat: true}
	}
	if len(afterDeactivation) == 0 {
		return out, nil
	}
	sub := make([]versori.Pair, len(afterDeactivation))
	for j, i := range afterDeactivation {
		sub[j] = pairs[i]
	}
	numbered, err := o.next(ctx, tasks.OpActivate, sub)
	if err != nil {
		return nil, err
	}
	for j, i := range afterDeactivation {
		out[i] = numbered[j]
	}
	return out, nil
}

// next numbers operations with the script.
func (o *Order) next(ctx context.Context, op tasks.Op, pairs []versori.Pair) ([]Ticket, error) {
	cmds := make([]*redis.Cmd, len(pairs))
	_, err := o.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, pr := range pairs {
			cmds[i] = nextScript.EvalSha(ctx, p, []string{rediskeys.PairOrder(tasks.TaskID(pr))}, opCode(op))
		}
		return nil
	})
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err = nextScript.Load(ctx, o.rdb).Err(); err == nil {
			return o.next(ctx, op, pairs)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("pairorder: numbering operations: %w", err)
	}
	out := make([]Ticket, len(pairs))
	for i, c := range cmds {
		v, err := c.Int64Slice()
		if err != nil || len(v) != 2 {
			return nil, fmt.Errorf("pairorder: numbering operations: unexpected answer %v: %w", c.Val(), err)
		}
		out[i] = Ticket{Seq: v[0], TaskID: tasks.TaskIDAt(pairs[i], v[0]), Repeat: v[1] == 1}
	}
	return out, nil
}

// Turn is what Begin found.
type Turn int

// The turns.
const (
	// Go: the run holds the pair's turn; it must End it.
	Go Turn = iota
	// Superseded: a later operation on the pair was enqueued; the job must do nothing.
	Superseded
	// Busy: another run holds the turn, or an earlier run's call may still commit; wait and begin
	// again.
	Busy
)

// turnsScript gives pairs' turns back, then takes pairs' turns, reading Redis's clock once.
// KEYS: the hashes of the runs giving their turns back, then those of the runs taking theirs. ARGV:
// how many give back; for each, the run's id and how long its calls may still commit (ms, 0 when
// none may); for each taker, its job's seq, the run's id and how long the turn is held at most (ms).
// Returns {turn, ms to wait} for each taker, in order. Give-backs go first: each was asked for once
// its run had finished, before the script ran, so a taker of the same pair in the same call finds
// the pair as that run left it.
//
// A taker numbered above the hash's seq means Redis lost the hash (a restart or failover that
// dropped its last writes): the job's number is written back, so that earlier jobs still queued end
// superseded and new operations are numbered after it, under an operation unknown ('?'), which
// nothing repeats.
var turnsScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ends = tonumber(ARGV[1])
for i = 1, ends do
	local key = KEYS[i]
	if redis.call('HGET', key, 'run') == ARGV[2 * i] then
		local settle = tonumber(ARGV[2 * i + 1])
		if settle <= 0 then
			redis.call('HDEL', key, 'run', 'until')
		else
			redis.call('HSET', key, 'until', now + settle)
		end
	end
end
local out = {}
local a = 2 + 2 * ends
for i = ends + 1, #KEYS do
	local key = KEYS[i]
	local myseq, myrun, hold = tonumber(ARGV[a]), ARGV[a + 1], tonumber(ARGV[a + 2])
	a = a + 3
	local h = redis.call('HMGET', key, 'seq', 'run', 'until')
	local seq = tonumber(h[1] or '0')
	local run = h[2]
	local till = tonumber(h[3] or '0')
	if seq > myseq then
		out[#out + 1] = 1
		out[#out + 1] = 0
	else
		if seq < myseq then
			redis.call('HSET', key, 'seq', myseq, 'op', '?')
		end
		local same = false
		local job = string.find(myrun, '\0', 1, true)
		if job and run and string.sub(run, 1, job) == string.sub(myrun, 1, job) then
			local held = tonumber(string.match(run, '^%d+', job + 1))
			local mine = tonumber(string.match(myrun, '^%d+', job + 1))
			local heldJob = string.match(run, '^%d+/(%d+)/', job + 1)
			local myJob = string.match(myrun, '^%d+/(%d+)/', job + 1)
			same = heldJob ~= myJob or (held ~= nil and mine ~= nil and mine > held)
		end
		if run and run ~= myrun and till > now and not same then
			out[#out + 1] = 2
			out[#out + 1] = till - now
		else
			redis.call('HSET', key, 'run', myrun, 'until', now + hold)
			out[#out + 1] = 0
			out[#out + 1] = 0
		end
	end
end
return out
`)

// Beginning is one run's Begin: its pair, its job's number, its id and how long it may hold the
// turn.
type Beginning struct {
	Pair versori.Pair
	Seq  int64
	Run  string
	Hold time.Duration
}

// Began is what one Beginning found: the turn and, for Busy, how long the holder may keep it.
type Began struct {
	Turn Turn
	Wait time.Duration
}

// Ending is one run's End: its pair, its id, and how long its calls may still commit.
type Ending struct {
	Pair   versori.Pair
	Run    string
	Settle time.Duration
}

// maxKeys bounds the keys of one script call.
const maxKeys = 512

// Begin takes the pair's turn for the run run (unique to one attempt of one job) of an operation
// numbered seq, for at most hold: should the run never End (its process died), the turn passes on
// after hold, which must therefore cover the run's calls and the time the API may take to commit
// one whose answer was lost. For Busy, wait is how long the holder may keep it.
//
// A run id may name its job and attempt before and after a NUL byte ("<job>\x00<attempt>/..." or
// "<job>\x00<attempt>/<enqueued>/...", enqueued telling a requeued dead letter from the job it was):
// a run then takes the turn over from a run of an earlier attempt of the same job, or of the job
// under the same task id before it was dead-lettered and requeued, whose process died or whose task
// asynq took back, rather than wait out its hold. The job's own retry waits for what that
// run's calls may have left to land, and its next attempt looks before it writes; the earlier run's
// End no longer matches, and does nothing. A run of the same attempt or an earlier one waits: asynq
// runs an attempt twice at once when it puts a task still running back in its queue uncounted (a
// shutdown's requeue, Redis restored to before the task was taken), and the first run's call may
// still land. A recovery after a crash is counted, so its attempt is later.
func (o *Order) Begin(ctx context.Context, pair versori.Pair, seq int64, run string, hold time.Duration) (turn Turn, wait time.Duration, err error) {
	got, err := o.Turns(ctx, nil, []Beginning{{Pair: pair, Seq: seq, Run: run, Hold: hold}})
	if err != nil {
		return Busy, 0, err
	}
	return got[0].Turn, got[0].Wait, nil
}

// End gives back the turn run took. When a call of the run may still commit at the API (its answer
// was lost), settle is how long the API may take: the pair stays Busy to every other run until
// then, so that none looks at it before the call has landed or never will.
func (o *Order) End(ctx context.Context, pair versori.Pair, run string, settle time.Duration) error {
	return o.EndMany(ctx, []Ending{{Pair: pair, Run: run, Settle: settle}})
}

// EndMany is End of many runs in one script call per maxKeys.
func (o *Order) EndMany(ctx context.Context, ends []Ending) error {
	_, err := o.Turns(ctx, ends, nil)
	return err
}

// Turns gives back the turns of ends, then takes those of begins (Begin and End of each), in one
// script call per maxKeys runs, and returns what each of begins found. Every pair's hash shares one
// hash tag, so this holds on a Cluster too. On an error, some of the calls may have been made.
func (o *Order) Turns(ctx context.Context, ends []Ending, begins []Beginning) ([]Began, error) {
	out := make([]Began, 0, len(begins))
	for len(ends) > 0 || len(begins) > 0 {
		ne := min(len(ends), maxKeys)
		nb := min(len(begins), maxKeys-ne)
		keys := make([]string, 0, ne+nb)
		args := make([]any, 0, 1+2*ne+3*nb)
		args = append(args, ne)
		for _, e := range ends[:ne] {
			keys = append(keys, rediskeys.PairOrder(tasks.TaskID(e.Pair)))
			args = append(args, e.Run, e.Settle.Milliseconds())
		}
		for _, b := range begins[:nb] {
			keys = append(keys, rediskeys.PairOrder(tasks.TaskID(b.Pair)))
			args = append(args, b.Seq, b.Run, b.Hold.Milliseconds())
		}
		ends, begins = ends[ne:], begins[nb:]
		v, err := turnsScript.Run(ctx, o.rdb, keys, args...).Int64Slice()
		if err != nil {
			return out, fmt.Errorf("pairorder: taking and giving back pairs' turns: %w", err)
		}
		if len(v) != 2*nb {
			return out, fmt.Errorf("pairorder: taking pairs' turns: unexpected answer %v", v)
		}
		for i := 0; i < len(v); i += 2 {
			out = append(out, Began{Turn: Turn(v[i]), Wait: time.Duration(v[i+1]) * time.Millisecond})
		}
	}
	return out, nil
}

// Last returns the number of the last operation enqueued on pair (0 when none was numbered after
// its first activation).
func (o *Order) Last(ctx context.Context, pair versori.Pair) (int64, error) {
	seq, err := o.rdb.HGet(ctx, rediskeys.PairOrder(tasks.TaskID(pair)), "seq").Int64()
	if err == redis.Nil {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("pairorder: reading the pair's last operation: %w", err)
	}
	return seq, nil
}
