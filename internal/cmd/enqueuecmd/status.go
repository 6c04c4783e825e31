package enqueuecmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/versori/activator/inspect"
	"github.com/versori/activator/internal/queuestate"
	"github.com/versori/activator/tasks"
)

func runStatus(ctx context.Context, args []string, env Env) (int, error) {
	var (
		c      common
		asJSON bool
		watch  bool
		every  time.Duration
	)
	fs := verbFlags("status", env, &c)
	fs.Bool(&asJSON, "json", "", false, "print JSON (durations in seconds)")
	fs.Bool(&watch, "watch", "", false, "print again every --interval until the batch is done")
	fs.Duration(&every, "interval", "", 2*time.Second, "how often --watch prints")
	pos, err := parse(fs, args)
	if err != nil {
		return ExitUsage, err
	}
	if len(pos) != 1 {
		return ExitUsage, usageError{errors.New("status takes one BATCH id")}
	}
	if strings.TrimSpace(pos[0]) == "" {
		return ExitUsage, usageError{errors.New("status needs a BATCH id (the one enqueue file printed first), not an empty one")}
	}
	if every <= 0 {
		return ExitUsage, usageError{errors.New("--interval must be positive")}
	}
	rdb, in, code, err := openInspector(ctx, c)
	if err != nil {
		return code, err
	}
	defer rdb.Close()
	for {
		st, err := in.Batch(ctx, pos[0])
		if errors.Is(err, inspect.ErrUnknownBatch) {
			return ExitRejected, fmt.Errorf("batch %s: %w on queue %s (never run there, or its counters expired 30 days after they last changed)", pos[0], err, c.queue)
		}
		if err != nil {
			return ExitFailed, err
		}
		if asJSON {
			b, err := json.Marshal(st)
			if err != nil {
				return ExitFailed, err
			}
			fmt.Fprintln(env.Stdout, string(b))
		} else {
			printStatus(env.Stdout, st, c.queue)
		}
		if !watch || st.Finished {
			return ExitOK, nil
		}
		select {
		case <-ctx.Done():
			return interruptCode(ctx), nil
		case <-time.After(every):
		}
	}
}

// byOp is " (activate 3, update 2, deactivate 1)" for a batch that queued more than activations,
// and "" for one that queued only those (or was counted before the lifecycle).
func byOp(queued map[string]int64) string {
	var parts []string
	for _, op := range tasks.Ops() {
		if n := queued[op.String()]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", op, n))
		}
	}
	if len(parts) == 0 || len(parts) == 1 && queued[tasks.OpActivate.String()] > 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// pausedBecause says why a queue is paused, from queuestate's reason.
func pausedBecause(reason string) string {
	switch reason {
	case queuestate.ReasonOperator:
		return "by an operator (enqueue pause); `enqueue resume` starts it again"
	case queuestate.ReasonUnauthorized:
		return "by the workers: the API refused the API key (or the signing key); they resume it once the key works, or `enqueue resume`"
	}
	return "not by activator (the queue UI or asynq); `enqueue resume` starts it again"
}

func printStatus(w io.Writer, s inspect.BatchStatus, queue string) {
	state := "running"
	switch {
	case s.Finished:
		state = "done"
	case s.Paused:
		state = "paused " + pausedBecause(s.PausedReason)
	}
	fmt.Fprintf(w, "batch %s: %s\nqueued: %d%s\nactivated: %d\nalready active: %d\n",
		s.ID, state, s.Queued, byOp(s.QueuedByOp), s.Activated, s.AlreadyActive)
	// The other results, for a batch that has their operation, or has them anyway (a pair's later
	// operation supersedes a job of any batch).
	update, deactivate := s.QueuedByOp[tasks.OpUpdate.String()] > 0, s.QueuedByOp[tasks.OpDeactivate.String()] > 0
	for _, r := range []struct {
		name  string
		n     int64
		shown bool
	}{
		{"variables updated", s.VariablesUpdated, update},
		{"deactivated", s.Deactivated, deactivate},
		{"already inactive", s.AlreadyInactive, deactivate},
		{"superseded", s.Superseded, update || deactivate},
		{"created user", s.CreatedUser, false},
	} {
		if r.shown || r.n != 0 {
			fmt.Fprintf(w, "%s: %d\n", r.name, r.n)
		}
	}
	fmt.Fprintf(w, "retries: %d\n", s.Retries)
	var dead int64
	for _, n := range s.DeadLetters {
		dead += n
	}
	fmt.Fprintf(w, "dead-lettered: %d", dead)
	for _, r := range s.Reasons() {
		if s.DeadLetters[r] != 0 {
			fmt.Fprintf(w, " %s=%d", r, s.DeadLetters[r])
		}
	}
	fmt.Fprintf(w, "\nremaining: %d\n", s.Remaining)
	round := func(d time.Duration) time.Duration { return d.Round(time.Second) }
	switch {
	case s.Finished && s.Running > 0:
		fmt.Fprintf(w, "rate: %.1f/s (from the first job's end to the last: %s)\n", s.Rate, round(s.Running))
	case s.Finished:
		fmt.Fprintln(w, "rate: not measured (every job ended within one counter flush)")
	case s.FirstDoneAt.IsZero() && s.Done == 0:
		fmt.Fprintf(w, "rate: none yet: no job has ended (is a worker running on queue %s?)\n", queue)
	case s.FirstDoneAt.IsZero():
		fmt.Fprintf(w, "rate: %.1f/s (average since the batch started: its counts are an older release's)\n", s.Rate)
	case s.RateWindow == 0:
		fmt.Fprintln(w, "rate: not measured yet (the first job ended under a second ago)")
	default:
		fmt.Fprintf(w, "rate: %.1f/s (last %s)\n", s.Rate, round(s.RateWindow))
	}
	if !s.Finished && s.Running > 0 {
		fmt.Fprintf(w, "average: %.1f/s (over %s since the first job ended)\n", s.AverageRate, round(s.Running))
	}
	switch {
	case s.Finished:
	case s.Paused:
		fmt.Fprintln(w, "eta: none while the queue is paused")
	case s.ETA > 0:
		fmt.Fprintf(w, "eta: %s\n", round(s.ETA))
	case s.RateWindow > 0:
		fmt.Fprintf(w, "eta: unknown: no job ended in the last %s\n", round(s.RateWindow))
	}
	switch {
	case s.Elapsed <= 0:
	case s.Finished:
		fmt.Fprintf(w, "elapsed: %s (from enqueueing to the last job's end)\n", round(s.Elapsed))
	default:
		fmt.Fprintf(w, "elapsed: %s (since the batch was enqueued)\n", round(s.Elapsed))
	}
}
