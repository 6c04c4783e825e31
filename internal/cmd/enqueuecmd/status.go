package enqueuecmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/versori/activator/inspect"
)

func runStatus(ctx context.Context, args []string, env Env) (int, error) {
	var (
		c      common
		asJSON bool
		watch  bool
		every  time.Duration
	)
	fs := newFlags("status", env, &c)
	fs.Bool(&asJSON, "json", "", false, "print JSON")
	fs.Bool(&watch, "watch", "", false, "print again every --interval until the batch is done")
	fs.Duration(&every, "interval", "", 2*time.Second, "how often --watch prints")
	pos, err := parse(fs, args)
	if err != nil {
		return ExitUsage, err
	}
	if len(pos) != 1 {
		return ExitUsage, usageError{errors.New("status takes one BATCH id")}
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
			return ExitRejected, fmt.Errorf("batch %s: %w", pos[0], err)
		}
		if err != nil {
			return ExitFailed, err
		}
		if asJSON {
			b, _ := json.Marshal(st)
			fmt.Fprintln(env.Stdout, string(b))
		} else {
			printStatus(env.Stdout, st)
		}
		if !watch || st.Finished {
			return ExitOK, nil
		}
		select {
		case <-ctx.Done():
			return ExitOK, nil
		case <-time.After(every):
		}
	}
}

func printStatus(w io.Writer, s inspect.BatchStatus) {
	state := "running"
	if s.Finished {
		state = "done"
	}
	fmt.Fprintf(w, "batch %s: %s\nqueued: %d\nactivated: %d\nalready active: %d\nretries: %d\n",
		s.ID, state, s.Queued, s.Activated, s.AlreadyActive, s.Retries)
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
	fmt.Fprintf(w, "\nremaining: %d\nrate: %.1f/s\n", s.Remaining, s.Rate)
	if !s.Finished && s.Rate > 0 {
		fmt.Fprintf(w, "eta: %s\n", s.ETA.Round(time.Second))
	}
}
