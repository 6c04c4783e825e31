package worker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
)

// taskKeyPrefix is the prefix of the test queue's task keys.
var taskKeyPrefix = rediskeys.AsynqTask("jobend", "")

// recordJobEnds is a hook that records, for every script asynq sends, whether jobEnd takes it for
// the end of a task's run, and until when it would send it again.
type recordJobEnds struct {
	mu    sync.Mutex
	ends  map[string]int       // task id -> job-end scripts seen
	until map[string]time.Time // task id -> the last one's resend limit
	rest  int                  // scripts that are not job ends
}

func (r *recordJobEnds) DialHook(next redis.DialHook) redis.DialHook { return next }
func (r *recordJobEnds) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (r *recordJobEnds) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		// Only scripts Redis ran: an EVALSHA answered NOSCRIPT is sent again as EVAL.
		if n := cmd.Name(); (n == "evalsha" || n == "eval") && err == nil {
			r.mu.Lock()
			if end, until := jobEnd(cmd); end {
				args := cmd.Args()
				for _, a := range args[3 : 3+args[2].(int)] {
					if k, ok := a.(string); ok && strings.HasPrefix(k, taskKeyPrefix) && k != taskKeyPrefix { // archive also names the prefix
						id := strings.TrimPrefix(k, taskKeyPrefix)
						r.ends[id]++
						r.until[id] = until
					}
				}
			} else {
				r.rest++
			}
			r.mu.Unlock()
		}
		return err
	}
}

// TestJobEndMatchesAsynqsScripts runs real tasks through a real asynq server and checks that
// exactly the scripts ending each task's run are taken for job ends: completion with and without
// retention, a retry and an archive, and nothing else asynq sends (enqueue, dequeue, lease
// extension, heartbeats, forwarding); and that a retry is sent again only until a second before its
// task may run again, when another worker could have fetched it.
func TestJobEndMatchesAsynqsScripts(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	rec := &recordJobEnds{ends: map[string]int{}, until: map[string]time.Time{}}
	db.Client.AddHook(rec)
	c := asynq.NewClientFromRedisClient(db.Client)
	tasks := []struct {
		id   string
		opts []asynq.Option
	}{
		{"complete", []asynq.Option{asynq.Retention(time.Hour)}},
		{"done", nil},
		{"retry", []asynq.Option{asynq.MaxRetry(3)}},
		{"archive", []asynq.Option{asynq.MaxRetry(0)}},
	}
	for _, tt := range tasks {
		opts := append([]asynq.Option{asynq.Queue("jobend"), asynq.TaskID(tt.id)}, tt.opts...)
		if _, err := c.Enqueue(asynq.NewTask("t", nil), opts...); err != nil {
			t.Fatal(err)
		}
	}
	handled := make(chan string, 10)
	srv := asynq.NewServerFromRedisClient(db.Client, asynq.Config{
		Concurrency: 2, Queues: map[string]int{"jobend": 1}, TaskCheckInterval: 20 * time.Millisecond,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour },
		LogLevel:       asynq.FatalLevel,
	})
	err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		handled <- id
		if id == "retry" || id == "archive" {
			return errors.New("fails")
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	for range tasks {
		select {
		case <-handled:
		case <-time.After(10 * time.Second):
			t.Fatal("asynq did not run every task")
		}
	}
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	deadline := time.Now().Add(10 * time.Second)
	for {
		qi, err := insp.GetQueueInfo("jobend")
		if err == nil && qi.Active == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tasks still active: %+v, %v", qi, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.Shutdown()

	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, tt := range tasks {
		if rec.ends[tt.id] != 1 {
			t.Errorf("task %s: %d job-end scripts, want 1 (all: %v)", tt.id, rec.ends[tt.id], rec.ends)
		}
	}
	if len(rec.ends) != len(tasks) {
		t.Errorf("job ends seen for %v, want only the 4 tasks", rec.ends)
	}
	for id, until := range rec.until {
		switch {
		case id == "retry":
			// The retry is due in an hour (RetryDelayFunc), in whole seconds.
			if d := time.Until(until); d < time.Hour-3*time.Second || d > time.Hour {
				t.Errorf("retry sent again until %s from now, want a second before its hour", d)
			}
		case !until.IsZero():
			t.Errorf("task %s sent again until %s, want for as long as its lease holds", id, until)
		}
	}
	if rec.rest == 0 {
		t.Error("no other script seen: the enqueue and dequeue scripts should have been")
	}
}

// TestJobEndRetryRetriesUntilAnswered checks the hook's loop: a job-end script that gets no answer
// is sent again until Redis answers; a reply error, another command, a done context or the worker's
// stop end it at once.
func TestJobEndRetryRetriesUntilAnswered(t *testing.T) {
	t.Parallel()
	jobEnd := func() redis.Cmder {
		return redis.NewCmd(context.Background(), "evalsha", "sha", 4,
			rediskeys.AsynqActive("q"), rediskeys.AsynqLease("q"), rediskeys.AsynqTask("q", "id"), rediskeys.AsynqProcessed("q", time.Now()), "arg")
	}
	// asynq v0.26's retry and requeue scripts, as they are sent.
	retry := func(processAt time.Time) redis.Cmder {
		return redis.NewCmd(context.Background(), "evalsha", "sha", 4,
			rediskeys.AsynqTask("q", "id"), rediskeys.AsynqActive("q"), rediskeys.AsynqLease("q"), rediskeys.AsynqRetry("q"),
			"id", "msg", processAt.Unix(), int64(0), true, int64(1<<62))
	}
	requeue := func() redis.Cmder {
		return redis.NewCmd(context.Background(), "evalsha", "sha", 4,
			rediskeys.AsynqActive("q"), rediskeys.AsynqLease("q"), rediskeys.AsynqPending("q"), rediskeys.AsynqTask("q", "id"), "id")
	}
	other := func() redis.Cmder {
		return redis.NewCmd(context.Background(), "evalsha", "sha", 4,
			rediskeys.AsynqPending("q"), rediskeys.AsynqPaused("q"), rediskeys.AsynqActive("q"), rediskeys.AsynqLease("q"), "arg")
	}
	tests := []struct {
		name      string
		cmd       redis.Cmder
		errs      []error // what each send returns, the last one repeated
		stop      bool    // the worker's stop is done
		ctx       time.Duration
		wantSends int
		wantErr   bool
	}{
		{"answered after an outage", jobEnd(), []error{io.EOF, io.ErrUnexpectedEOF, errors.New("dial tcp: connection refused"), nil}, false, 0, 4, false},
		{"not a job end", other(), []error{io.EOF, nil}, false, 0, 1, true},
		{"redis replied an error", jobEnd(), []error{redisReplyError(t)}, false, 0, 1, true},
		{"worker stopping", jobEnd(), []error{io.EOF}, true, 0, 1, true},
		{"lease over", jobEnd(), []error{io.EOF}, false, 30 * time.Millisecond, 0, true},
		{"a retry due in a minute", retry(time.Now().Add(time.Minute)), []error{io.EOF, nil}, false, 0, 2, false},
		// Sent again once its task may run, it could move another worker's run back.
		{"a retry due now", retry(time.Now()), []error{io.EOF, nil}, false, 0, 1, true},
		{"a requeue", requeue(), []error{io.EOF, nil}, false, 0, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stop, cancelStop := context.WithCancel(context.Background())
			defer cancelStop()
			if tt.stop {
				cancelStop()
			}
			ctx := context.Background()
			if tt.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctx)
				defer cancel()
			}
			sends := 0
			next := func(context.Context, redis.Cmder) error {
				err := tt.errs[min(sends, len(tt.errs)-1)]
				sends++
				return err
			}
			h := jobEndRetry{stop: stop, every: 5 * time.Millisecond, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			err := h.ProcessHook(next)(ctx, tt.cmd)
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantSends > 0 && sends != tt.wantSends {
				t.Errorf("sent %d times, want %d", sends, tt.wantSends)
			}
			if tt.wantSends == 0 && sends < 2 {
				t.Errorf("sent %d times before the lease ended, want it retried", sends)
			}
		})
	}
}

// redisReplyError is an error as Redis replies it (NOT FOUND from a script that already ran).
func redisReplyError(t *testing.T) error {
	t.Helper()
	db := testutil.Redis(t)
	err := db.Client.Eval(context.Background(), `return redis.error_reply("NOT FOUND")`, nil).Err()
	var re redis.Error
	if !errors.As(err, &re) {
		t.Fatalf("Eval error %v is not a Redis reply error", err)
	}
	return err
}
