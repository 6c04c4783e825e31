package pairorder

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/versori"
)

// Batcher takes and gives back one worker's turns, sending the Begins and Ends asked for while a
// script call is in flight together in the next call (Order.Turns). A lone Begin goes at once, so an
// idle worker waits no longer than one round trip; under load one call serves many jobs, where a
// call per job cost the worker and Redis about as much as the rest of the job's own Redis work. It is
// safe for concurrent use.
type Batcher struct {
	o       *Order
	log     *slog.Logger
	timeout time.Duration

	mu       sync.Mutex
	begins   []*beginning
	ends     []Ending
	flushing bool // a goroutine is sending, and takes what is pending before it stops
	wg       sync.WaitGroup
}

// beginning is one Begin waiting for its batch's answer.
type beginning struct {
	Beginning
	done chan struct{} // closed once got and err are set
	got  Began
	err  error
	// abandoned: Begin returned before the answer (its context ended); a turn taken for it is
	// given back at once, so that the pair is not held until the hold ends.
	abandoned bool
}

// NewBatcher returns a Batcher of o; each script call may take timeout, and give-backs that fail
// are logged to log (their turns pass on when their holds end).
func NewBatcher(o *Order, timeout time.Duration, log *slog.Logger) *Batcher {
	return &Batcher{o: o, timeout: timeout, log: log}
}

// Begin is Order.Begin, sent with the other Begins and Ends asked for meanwhile. If ctx ends first it
// returns ctx's error, and a turn the call then takes is given back; so is one the call may have
// taken when it returns an error other than Redis's refusal (its answer lost, or late).
func (b *Batcher) Begin(ctx context.Context, pair versori.Pair, seq int64, run string, hold time.Duration) (Turn, time.Duration, error) {
	r := &beginning{Beginning: Beginning{Pair: pair, Seq: seq, Run: run, Hold: hold}, done: make(chan struct{})}
	b.mu.Lock()
	b.begins = append(b.begins, r)
	b.flushLocked()
	b.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		b.mu.Lock()
		select {
		case <-r.done: // answered meanwhile
			b.mu.Unlock()
		default:
			r.abandoned = true
			b.mu.Unlock()
			return Busy, 0, ctx.Err()
		}
	}
	if r.err != nil {
		return Busy, 0, r.err
	}
	return r.got.Turn, r.got.Wait, nil
}

// End is Order.End, sent behind the caller: it returns at once. Wait waits for it.
func (b *Batcher) End(pair versori.Pair, run string, settle time.Duration) {
	b.mu.Lock()
	b.ends = append(b.ends, Ending{Pair: pair, Run: run, Settle: settle})
	b.flushLocked()
	b.mu.Unlock()
}

// Wait waits until nothing is pending or being sent.
func (b *Batcher) Wait() { b.wg.Wait() }

// flushLocked starts the sending goroutine unless it runs. b.mu is held.
func (b *Batcher) flushLocked() {
	if b.flushing {
		return
	}
	b.flushing = true
	b.wg.Add(1)
	go b.send()
}

// send sends what is pending until nothing is.
func (b *Batcher) send() {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		begins, ends := b.begins, b.ends
		b.begins, b.ends = nil, nil
		if len(begins) == 0 && len(ends) == 0 {
			b.flushing = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		req := make([]Beginning, len(begins))
		for i, r := range begins {
			req[i] = r.Beginning
		}
		got, errs := b.turns(ends, req)
		b.mu.Lock()
		for i, r := range begins {
			r.got, r.err = got[i], errs[i]
			// A run told of an error never calls the API; unless Redis refused the call (which took
			// nothing for it), its answer may have been lost after the script gave it the turn.
			if r.abandoned && r.err == nil && r.got.Turn == Go || r.err != nil && !isReply(r.err) {
				b.ends = append(b.ends, Ending{Pair: r.Pair, Run: r.Run})
			}
			close(r.done)
		}
		b.mu.Unlock()
	}
}

// turns sends ends and begins in one script call and returns what each of begins found, or its
// error. Should the script fail at a key (Redis names the script's line: one pair's key of the wrong
// type, or a field that is not a number), it has stopped there after taking or giving back the turns
// before it, so each run is sent again alone (not on a refusal of the whole call, as by a Redis
// loading or read-only): the bad key fails only its own run, and a run the failed call served finds
// its turn its own (a take of a turn the run holds takes it again) rather than held by a run told of
// an error, which would keep its pair busy until the hold ends.
func (b *Batcher) turns(ends []Ending, begins []Beginning) ([]Began, []error) {
	got := make([]Began, len(begins))
	errs := make([]error, len(begins))
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	all, err := b.o.Turns(ctx, ends, begins)
	cancel()
	if err != nil && isReply(err) && strings.Contains(err.Error(), "@user_script") && len(ends)+len(begins) > 1 {
		failed, last := 0, error(nil)
		for _, e := range ends {
			ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
			if err := b.o.EndMany(ctx, []Ending{e}); err != nil {
				failed, last = failed+1, err
			}
			cancel()
		}
		if failed > 0 {
			b.log.Warn("could not give pairs' turns back; they pass on when their holds end",
				"turns", failed, "error", last.Error())
		}
		for i, bg := range begins {
			ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
			one, err := b.o.Turns(ctx, nil, []Beginning{bg})
			cancel()
			if err != nil {
				errs[i] = err
				continue
			}
			got[i] = one[0]
		}
		return got, errs
	}
	if err != nil && len(ends) > 0 {
		b.log.Warn("could not give pairs' turns back; they pass on when their holds end",
			"turns", len(ends), "error", err.Error())
	}
	for i := range begins {
		if i < len(all) {
			got[i] = all[i]
		} else {
			errs[i] = err
		}
	}
	return got, errs
}

// isReply says err is Redis's error reply: the script stopped at a key before writing it.
func isReply(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply)
}
