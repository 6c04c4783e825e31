package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/versori/activator/tasks"

	"github.com/hibiken/asynq"
	"github.com/sethvargo/go-retry"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/breaker"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/pairorder"
	"github.com/versori/activator/internal/ratelimit"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/results"
	"github.com/versori/activator/metrics"
	"github.com/versori/activator/versori"
)

// handlerConfig configures a handler.
type handlerConfig struct {
	Client  *versori.Client
	Store   *deadletter.Store
	Metrics *metrics.Worker
	Logger  *slog.Logger
	Policy  RetryPolicy
	// PerUserAuth is true when calls carry per-end-user JWTs: a refusal is then the user's or the
	// signing key's, which CheckKey's probe, made for a user of its own, tells apart.
	PerUserAuth bool
	// Pause pauses the queue; it is called when the API refuses the API key or the signing key.
	Pause func(context.Context) error
	// CheckKey, if set, tells whether the API accepts the API key now (a probe call, shared by the
	// jobs that ask at once). A refusal pauses the queue only when it says keyRefused; without it,
	// every refusal does.
	CheckKey func(ctx context.Context, sent time.Time) keyState
	// KeyWorked, if set, is told of each end user a per-user token was accepted for, so that the
	// probe can ask about a user the API knows.
	KeyWorked func(ctx context.Context, userID string)
	// LookFirst, if set, reports whether even the first attempt of a job queued at enqueuedAt must
	// look up its pair before activating: Redis may have lost writes since (a restart or a
	// failover), bringing back jobs that had already activated.
	LookFirst func(ctx context.Context, enqueuedAt time.Time) bool
	// Interrupt, when done, cuts short every call in flight. The worker closes it when the shutdown
	// grace period is over, so that handlers return before asynq would requeue their tasks.
	Interrupt context.Context
	// Breaker, if set, stops calls while most recent ones fail transiently.
	Breaker *breaker.Breaker
	// Backoff, if set, is told of every 429's wait, so that all workers slow down, not only this job.
	Backoff func(ctx context.Context, wait time.Duration) error
	// Batches, if set, counts each job's outcome under its batch, for `enqueue status`.
	Batches *batch.Counter
	// Results, if set, records each done job's activation id as its task result.
	Results *results.Writer
	// MaxAge, if positive, dead-letters a job that keeps failing, or waiting, this long after it was
	// enqueued, whatever attempts it has left.
	MaxAge time.Duration
	// Keys open the jobs' sealed credentials (nil: none; a job with sealed credentials is then
	// dead-lettered as secret_unreadable).
	Keys *tasks.Keyring
	// Order, if set, orders the operations on each pair: every attempt takes the pair's turn first
	// (pairorder.Begin), so that a superseded job does nothing and no two jobs call the API for a
	// pair at once.
	Order *pairorder.Order
}

// keyState is what a probe says of the API key.
type keyState int

// The key states.
const (
	keyUnknown  keyState = iota // the probe failed for another reason; try again later
	keyAccepted                 // the key works: a refusal concerned one request
	keyRefused                  // the key is refused: every job would fail alike
	// keyRestored: the key works, but was refused after the request was sent: the refusal was the
	// key's, so the job waits as a paused one does, using no attempt, and sends again.
	keyRestored
)

// handler runs activation jobs. It is an asynq.Handler.
//
// Exactly one activation per pair: POST /activations is not idempotent, so an attempt that may
// follow an attempt whose outcome is unknown looks up the pair's activations first and counts one it
// finds as done. Such an attempt is one with a retry count above zero (asynq counts failures and
// crash recoveries), a replayed dead letter or a pair queued before (Payload.Reconcile), any attempt
// while Redis may have lost writes (LookFirst), or a quick in-handler retry after a failed look-up.
// After a POST whose outcome is unknown the job goes back to the queue for at least
// Policy.SettleTime, since a gateway's backend may commit after it answered: quick in-handler
// retries are only for failures known not to have reached the API. asynq also requeues tasks with
// retry count 0 when its shutdown timeout passes while a handler still runs; the worker prevents
// that by cutting calls short through Interrupt before then, so that the handler returns a counted
// failure instead. A first attempt therefore costs one API call and one Redis round trip besides
// asynq's own, to take the pair's turn: the turn's return, the result, the batch counts and the
// metrics are written behind the job.
//
// Jobs run the operations of docs/lifecycle.md (tasks.Op): activate, update (activate, or PUT the
// variables of an active pair) and deactivate (DELETE each activation found). Each attempt first
// takes its pair's turn (internal/pairorder): a job whose pair has a later operation ends superseded
// without a call, and one whose pair another run holds, or whose earlier call's answer was lost and
// may still land, waits without using an attempt. A job carrying an end user creates them when the
// API answers its POST 404 and does not know them (looking them up first, every time: the create is
// not idempotent), then POSTs again in the same attempt.
type handler struct {
	cfg handlerConfig
	log *slog.Logger
	// turns takes pairs' turns and gives them back for the jobs (takeTurn, endTurn); nil without
	// cfg.Order.
	turns *pairorder.Batcher
}

// newHandler returns a handler for cfg.
func newHandler(cfg handlerConfig) (*handler, error) {
	if cfg.Client == nil || cfg.Store == nil || cfg.Metrics == nil {
		return nil, errors.New("tasks: handler needs a client, a dead-letter store and metrics")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Policy = cfg.Policy.WithDefaults()
	h := &handler{cfg: cfg, log: cfg.Logger}
	if cfg.Order != nil {
		h.turns = pairorder.NewBatcher(cfg.Order, storeTimeout, cfg.Logger)
	}
	return h, nil
}

// job is what asynq tells a handler about the task it runs.
type job struct {
	id       string
	queue    string
	retried  int
	limit    int // failures allowed before the job is dead-lettered
	asynqMax int // asynq's own limit, tasks.CrashRetries above limit for jobs of this release
	start    time.Time
}

func (j job) lastAttempt() bool { return j.retried >= j.limit }

// canWait reports whether asynq will run the job again after a counted failure.
func (j job) canWait() bool { return j.retried < j.asynqMax }

// outcome is the result of one attempt.
type outcome struct {
	class versori.Class
	err   error
	// unknown: whether the pair is active is unknown after the attempt (a POST's outcome is
	// unknown, or the look-up that was to find out failed).
	unknown bool
	// posted: the attempt's POST may have committed although it failed (a 5xx, a timeout, a
	// connection lost after the request was written), so the next look-up must wait for the API
	// to settle.
	posted       bool
	result       string // one of metrics.Results
	activationID string
}

// ProcessTask implements asynq.Handler.
func (h *handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	growStack()
	j := job{start: time.Now()}
	j.id, _ = asynq.GetTaskID(ctx)
	j.queue, _ = asynq.GetQueueName(ctx)
	j.retried, _ = asynq.GetRetryCount(ctx)
	j.asynqMax, _ = asynq.GetMaxRetry(ctx)
	j.limit = j.asynqMax

	p, err := tasks.DecodePayload(t.Payload())
	if err != nil {
		// Nothing can be sent for a payload that cannot be read; keep it for a person.
		return h.deadLetter(ctx, j, p, tasks.ReasonInvalidRequest, versori.ClassInvalidRequest, err)
	}
	if p.MaxRetry > 0 && p.MaxRetry < j.limit {
		j.limit = p.MaxRetry
	}
	if h.cfg.Interrupt != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(h.cfg.Interrupt, cancel)
		defer stop()
	}

	expired := h.cfg.MaxAge > 0 && !p.EnqueuedAt.IsZero() && time.Since(p.EnqueuedAt) > h.cfg.MaxAge
	final := j.retried > j.limit || (expired && j.retried > 0)
	run, stop, err := h.takeTurn(ctx, j, p, expired, final)
	if stop {
		return err
	}
	var settle time.Duration // how long a call of this attempt whose answer was lost may still land
	defer func() { h.endTurn(p, run, settle) }()
	if final {
		out, err := h.finalLookUp(ctx, j, p, expired)
		if out.posted {
			settle = h.cfg.Policy.SettleTime
		}
		return err
	}
	// The credentials are opened into a copy that lives only in this call: p, which dead letters and
	// log lines are made of, keeps them sealed. Not before the final look-up, which sends none: a
	// worker without the key must still find what an earlier POST activated.
	send := p
	if err := send.Open(h.cfg.Keys); err != nil {
		return h.deadLetter(ctx, j, p, tasks.ReasonSecretUnreadable, versori.ClassInvalidRequest, err)
	}
	// A task id not in canonical form was queued by a release before ULIDs were made canonical: the
	// same pair may have another task under the canonical id.
	reconcile := j.retried > 0 || p.Reconcile || j.id != tasks.CanonicalTaskID(j.id) ||
		(h.cfg.LookFirst != nil && h.cfg.LookFirst(ctx, p.EnqueuedAt))
	sent := time.Now()
	out := h.run(ctx, p, send, reconcile)
	if out.posted {
		settle = h.cfg.Policy.SettleTime
	}
	rule := tasks.RuleFor(out.class, h.cfg.PerUserAuth)
	if out.class == versori.ClassOK && h.cfg.PerUserAuth && h.cfg.KeyWorked != nil {
		h.cfg.KeyWorked(ctx, p.Request.UserID)
	}
	if out.class == versori.ClassUnauthorized && h.cfg.PerUserAuth {
		// A refused per-user token is this user's, or the signing key's (revoked, or our clock too far
		// from the API's), which would refuse every job alike: the probe tells, as for an API key.
		rule = tasks.Rule{Action: tasks.ActionPause, Reason: tasks.ReasonUnauthorized}
	}
	// A look-up that was to tell whether an earlier POST committed, and failed: its answer is about
	// the look-up, not the request, so it decides nothing (a 404 or 403 on the list does not make the
	// POST's a not_found or unauthorized).
	lookUpFailed := out.unknown && !out.posted
	if _, ok := limiterWait(out.err); ok {
		// Not sent: the rate limit or a shared back-off lasts longer than the job may wait. That is
		// a wait, never a failure.
		rule = tasks.Rule{Action: tasks.ActionSnooze, Reason: tasks.ReasonRetriesExhausted}
	}
	keyWasRefused := false
	if rule.Action == tasks.ActionPause {
		switch h.checkKey(ctx, sent) {
		case keyAccepted:
			// The key works, so the refusal concerned this request: pausing would stop every job
			// for it, again and again.
			rule = tasks.Rule{Action: tasks.ActionDeadLetter, Reason: rule.Reason}
			out.err = fmt.Errorf("the API refused this request although it accepts the %s: %w", h.credential(), out.err)
		case keyUnknown:
			rule = tasks.Rule{Action: tasks.ActionRetry, Reason: rule.Reason}
		case keyRestored:
			keyWasRefused = true
		}
	}
	if lookUpFailed && rule.Action == tasks.ActionDeadLetter {
		rule = tasks.Rule{Action: tasks.ActionRetry, Reason: rule.Reason}
	}
	pol := h.cfg.Policy
	if rule.Action != tasks.ActionDone && rule.Action != tasks.ActionDeadLetter && (j.lastAttempt() || expired) {
		// Every way of waiting ends: at the retry limit, or at the job's maximum age, which also
		// bounds waits that use no attempt. But while whether the pair is active is unknown (a POST
		// that may still commit, or a look-up that failed), a dead letter now could sit beside an
		// activation: the job waits (for the API to settle, after a POST) and one last attempt, a
		// look-up and never a POST, decides (finalLookUp).
		if out.unknown && j.canWait() {
			wait := pol.backoff(j.retried)
			if out.posted {
				wait = max(wait, pol.SettleTime)
			}
			h.logOutcome(slog.LevelWarn, j, p, out, slog.String("action", "final_look_up"), slog.String("wait", wait.String()))
			return &waitError{Wait: wait, Counts: true, Err: fmt.Errorf("%s: %w", out.class, out.err)}
		}
		err := out.err
		if !j.lastAttempt() {
			err = fmt.Errorf("still failing %s after it was enqueued (maximum age %s): %w",
				time.Since(p.EnqueuedAt).Round(time.Second), h.cfg.MaxAge, out.err)
		}
		return h.deadLetter(ctx, j, p, rule.Reason, out.class, err)
	}
	switch rule.Action {
	case tasks.ActionDone:
		return h.done(j, p, out)
	case tasks.ActionDeadLetter:
		return h.deadLetter(ctx, j, p, rule.Reason, out.class, out.err)
	case tasks.ActionSnooze:
		wait := h.snoozeWait(ctx, j, p, out)
		h.logOutcome(slog.LevelWarn, j, p, out, slog.String("action", "snooze"), slog.String("wait", wait.String()))
		return &waitError{Wait: wait, Counts: mustLookNext(j, p, out), Err: out.err}
	case tasks.ActionPause:
		action := "wait_key_restored"
		if !keyWasRefused {
			h.pause(ctx, out.err)
			action = "pause_queue"
		}
		h.logOutcome(slog.LevelError, j, p, out, slog.String("action", action), slog.String("wait", pol.PausedWait.String()))
		return &waitError{Wait: pol.PausedWait, Counts: mustLookNext(j, p, out), Err: out.err}
	default: // tasks.ActionRetry
		if h.interrupted() {
			// Cut short by shutdown: another worker should take it soon, after looking first.
			wait := pol.InterruptedWait
			if out.posted {
				wait = max(wait, pol.SettleTime)
			}
			h.logOutcome(slog.LevelWarn, j, p, out, slog.String("action", "retry"), slog.Bool("interrupted", true))
			return &waitError{Wait: wait, Counts: !versori.IsNotSent(out.err) || mustLookNext(j, p, out), Err: out.err}
		}
		h.cfg.Batches.Add(p.Batch, batch.FieldRetries, 1)
		// Every retry the handler asks for says how long to wait, so that RetryDelay can tell its
		// own errors from asynq's (a job deadline or a lost lease), which may follow a POST.
		wait := pol.backoff(j.retried)
		if out.posted {
			// The API may still commit the POST: look again only once it has settled.
			wait = max(wait, pol.SettleTime)
		}
		h.logOutcome(slog.LevelWarn, j, p, out, slog.String("action", "retry"), slog.String("wait", wait.String()))
		return &waitError{Wait: wait, Counts: true, Err: fmt.Errorf("%s: %w", out.class, out.err)}
	}
}

// mustLookNext reports whether a wait must use up an attempt: whether the pair is active is still
// unknown (the breaker, a 429 or a refused key stopped the look-up after it), and only a retry
// count above zero would make the next attempt look first.
func mustLookNext(j job, p tasks.Payload, out outcome) bool {
	return out.unknown && j.retried == 0 && !p.Reconcile
}

// finalLookUp is the attempt of a job that has given up (past its retry limit or its maximum age)
// after a call whose outcome was unknown: it looks the pair up, never POSTs, and ends the job. An
// activation is done when the pair is active, else dead-lettered. An update that finds the pair
// active sets its variables (PUT is idempotent), else is dead-lettered. A deactivation deletes what
// it finds (DELETE is idempotent) and is done once the pair has none. A look-up that fails is tried
// again while asynq allows; past that, asynq archives the task and the sweep stores it. It returns
// the outcome too, for the pair's turn.
func (h *handler) finalLookUp(ctx context.Context, j job, p tasks.Payload, expired bool) (outcome, error) {
	start := time.Now()
	var out outcome
	if p.Op == tasks.OpDeactivate {
		out = h.deactivate(ctx, p, true)
	} else {
		out = h.finalFind(ctx, p, expired)
	}
	out.err = scrubSecrets(out.err, p)
	h.cfg.Metrics.ObserveAttempt(out.class, time.Since(start))
	switch {
	case out.class == versori.ClassOK:
		return out, h.done(j, p, out)
	case out.unknown && j.canWait():
		// Tried again within asynq's margin (CrashRetries), each try counted, so that it ends; a
		// 429 or an open breaker sets the wait. With the backoff growing to RETRY_CAP, the list
		// route must fail for most of an hour before the job gives up not knowing.
		wait := h.cfg.Policy.backoff(j.retried)
		if w, ok := limiterWait(out.err); ok {
			wait = max(wait, w)
		} else if w, ok := versori.RetryAfterOf(out.err); ok {
			wait = max(wait, min(w, h.cfg.Policy.MaxRetryAfter))
		} else if out.class == tasks.ClassCircuitOpen {
			wait = max(wait, h.cfg.Breaker.Cooldown())
		}
		if out.posted {
			wait = max(wait, h.cfg.Policy.SettleTime)
		}
		h.logOutcome(slog.LevelWarn, j, p, out, slog.String("action", "final_look_up"), slog.String("wait", wait.String()))
		return out, &waitError{Wait: wait, Counts: true, Err: out.err}
	}
	if out.unknown {
		out.err = fmt.Errorf("gave up looking the pair up, so whether it is %s is unknown (a requeue looks first): %w", wantState(p.Op), out.err)
	}
	return out, h.deadLetter(ctx, j, p, tasks.ReasonRetriesExhausted, out.class, out.err)
}

// finalFind is finalLookUp's look-up for an activation or an update.
func (h *handler) finalFind(ctx context.Context, p tasks.Payload, expired bool) outcome {
	act, err := h.lookUp(ctx, p)
	switch {
	case err != nil:
		return outcome{class: classOf(err), err: err, unknown: true}
	case act != nil && p.Op == tasks.OpUpdate:
		// Found: activated by an earlier attempt's POST (with the request's variables), or active all
		// along while every look-up failed; setting the variables is right either way.
		return h.putVariables(ctx, p, act.ID, true)
	case act != nil:
		return outcome{class: versori.ClassOK, result: metrics.ResultAlreadyActive, activationID: act.ID}
	}
	why := "after its last attempts"
	if expired {
		why = fmt.Sprintf("%s after it was enqueued (maximum age %s)", time.Since(p.EnqueuedAt).Round(time.Second), h.cfg.MaxAge)
	}
	return outcome{class: versori.ClassTransient, err: fmt.Errorf("gave up %s: a last look-up, once the API had "+
		"settled, found no activation for the pair", why)}
}

// wantState is the state op leaves its pair in, for messages.
func wantState(op tasks.Op) string {
	if op == tasks.OpDeactivate {
		return "inactive"
	}
	return "active"
}

// busyWaitCap bounds a wait for the pair's turn: the run holding it usually gives it back within
// one call, long before its hold (the job's deadline plus SETTLE_TIME) would end.
const busyWaitCap = 5 * time.Second

// defaultHold is how long a run without a deadline holds its pair's turn at most, before
// SETTLE_TIME: asynq's default task timeout.
const defaultHold = 30 * time.Minute

// takeTurn takes the pair's turn for one attempt of j (pairorder.Begin): one Redis round trip,
// shared with the jobs that take or give back theirs meanwhile (pairorder.Batcher). It
// returns the run's id, for endTurn; when the attempt must not go on, stop is true and err is what
// ProcessTask returns: nil for a job done as superseded, a wait that uses no attempt while another
// run holds the turn (or a lost call of an earlier one may still land), and a counted retry when
// Redis fails, as when a dead letter cannot be stored. final says the attempt is finalLookUp's.
func (h *handler) takeTurn(ctx context.Context, j job, p tasks.Payload, expired, final bool) (run string, stop bool, err error) {
	if h.turns == nil {
		return "", false, nil
	}
	pol := h.cfg.Policy
	// Named by the job, its attempt and when it was enqueued, so that an attempt takes the turn over
	// from an earlier attempt of the same job that died holding it (a crash: its retry already waited
	// for the API to settle), or from the job a requeued dead letter was, but not from another run of
	// the same attempt, which asynq starts when it puts back a task still running (pairorder.Begin).
	run = j.id + "\x00" + strconv.Itoa(j.retried) + "/"
	if !p.EnqueuedAt.IsZero() {
		run += strconv.FormatInt(p.EnqueuedAt.UnixNano(), 10) + "/"
	}
	run += strconv.FormatUint(rand.Uint64(), 36)
	hold := defaultHold + pol.SettleTime
	if d, ok := ctx.Deadline(); ok {
		hold = max(time.Until(d), 0) + pol.SettleTime
	}
	turn, wait, err := h.turns.Begin(ctx, p.Request.Pair(), p.Seq, run, hold)
	switch {
	case err != nil:
		h.log.Error("could not take the pair's turn; the job will try again", "task_id", j.id, "error", err.Error())
		return "", true, &waitError{Wait: storeRetryWait, Counts: true, Err: err}
	case turn == pairorder.Superseded:
		return "", true, h.done(j, p, outcome{class: versori.ClassOK, result: metrics.ResultSuperseded})
	case turn == pairorder.Busy:
		err := fmt.Errorf("another run holds the pair's turn, or a call of an earlier one may still land, for %s", wait.Round(time.Millisecond))
		out := outcome{class: versori.ClassTransient, err: err}
		if (expired && !final) || !j.canWait() {
			// Every way of waiting ends; no call of this job is in flight, so nothing is unknown.
			return "", true, h.deadLetter(ctx, j, p, tasks.ReasonRetriesExhausted, out.class,
				fmt.Errorf("still waiting for the pair's turn %s after it was enqueued: %w", time.Since(p.EnqueuedAt).Round(time.Second), err))
		}
		wait = min(max(wait, 0), busyWaitCap)
		h.logOutcome(slog.LevelInfo, j, p, out, slog.String("action", "wait_turn"), slog.String("wait", wait.String()))
		return "", true, &waitError{Wait: wait, Counts: false, Err: err}
	}
	return run, false, nil
}

// endTurn gives back the pair's turn that run took, behind the job (pairorder.Batcher), so that
// the attempt's only Redis round trip of its own is takeTurn's: a job that begins before it lands
// waits a moment. settle is how long a call of the run whose answer was lost may still land (0:
// none), during which the pair stays busy. Should it fail, the turn passes on when its hold ends.
func (h *handler) endTurn(p tasks.Payload, run string, settle time.Duration) {
	if run == "" {
		return
	}
	h.turns.End(p.Request.Pair(), run, settle)
}

// wait waits for the turns being given back.
func (h *handler) wait() {
	if h.turns != nil {
		h.turns.Wait()
	}
}

// limiterWait is how long the rate limiter or a shared back-off would have held a call that it
// therefore did not send.
func limiterWait(err error) (time.Duration, bool) {
	var w *ratelimit.WaitError
	if errors.As(err, &w) {
		return w.Wait, true
	}
	return 0, false
}

// run makes the job's attempts: one, plus up to Policy.QuickRetries more while the job's deadline
// allows, for transient failures known not to have reached the API (a refused connection, a 408 or
// 425, a failed look-up). After a write that may have committed, it stops: the next look-up must
// wait for the API to settle. send is p with its credentials opened.
func (h *handler) run(ctx context.Context, p, send tasks.Payload, reconcile bool) outcome {
	pol := h.cfg.Policy
	b := retry.WithMaxRetries(uint64(pol.QuickRetries),
		retry.WithCappedDuration(pol.QuickCap, retry.WithJitterPercent(20, retry.NewExponential(pol.QuickBase))))
	// If ctx is done before the first attempt, no call is made: a transient outcome, nothing unknown.
	out := outcome{class: versori.ClassTransient, err: &versori.TransportError{Op: versori.OpActivate, Err: context.Canceled, NotSent: true}}
	if err := context.Cause(ctx); err != nil {
		out.err = &versori.TransportError{Op: versori.OpActivate, Err: err, NotSent: true}
	}
	_ = retry.Do(ctx, b, func(ctx context.Context) error {
		start := time.Now()
		out = h.attempt(ctx, p, send, reconcile)
		out.err = scrubSecrets(out.err, send)
		h.cfg.Metrics.ObserveAttempt(out.class, time.Since(start))
		if out.class != versori.ClassTransient || out.posted || h.interrupted() || ctx.Err() != nil {
			return nil
		}
		if _, ok := limiterWait(out.err); ok {
			return nil
		}
		reconcile = reconcile || out.unknown
		if d, ok := ctx.Deadline(); ok && time.Until(d) < 2*pol.QuickCap {
			return nil
		}
		return retry.RetryableError(out.err)
	})
	return out
}

// attempt makes one attempt of p's operation; send is p with its credentials opened, for the
// writes only.
func (h *handler) attempt(ctx context.Context, p, send tasks.Payload, reconcile bool) outcome {
	switch p.Op {
	case tasks.OpUpdate:
		return h.update(ctx, p, send)
	case tasks.OpDeactivate:
		return h.deactivate(ctx, p, reconcile)
	}
	if reconcile {
		act, stop := h.lookFirst(ctx, p, send, true)
		if stop != nil {
			return *stop
		}
		if act != nil {
			return outcome{class: versori.ClassOK, result: metrics.ResultAlreadyActive, activationID: act.ID}
		}
	}
	return h.activate(ctx, p, send)
}

// lookFirst looks the pair up before a POST, and returns the activation found, or nil to go on;
// stop is the attempt's outcome when it ends here (the look-up failed). mayBeActive says an earlier
// call may have activated the pair. The API answers the list of a user it does not know 404: as good
// as none when nothing can be active. Else, since a gateway's 404 would look the same, it decides
// nothing, but for a job that may create its end user, or an update, which looks the user up:
// absent, they are created (a user who did not exist has no activation), or for an update without an
// end user the pair is inactive; present, the 404 decides nothing.
func (h *handler) lookFirst(ctx context.Context, p, send tasks.Payload, mayBeActive bool) (*versori.EndUserActivation, *outcome) {
	act, err := h.lookUp(ctx, p)
	if err == nil {
		return act, nil
	}
	if classOf(err) == versori.ClassNotFound && (!mayBeActive || p.EndUser != nil || p.Op == tasks.OpUpdate) {
		if !mayBeActive {
			return nil, nil
		}
		// An update without an end user to create looks the user up as a deactivation does: absent,
		// the pair has no activation (and its POST is not_found); present, the 404 was a gateway's.
		switch st, out := h.ensureUser(ctx, p, send, p.EndUser != nil); st {
		case userCreated, userAbsent:
			return nil, nil
		case userFailed:
			out.unknown = true
			return nil, &out
		}
		// Found, or the create said the user exists: the list's 404 may have been a gateway's, and
		// the pair may be active.
	}
	// The earlier outcome is still unknown, so the next attempt must look again.
	return nil, &outcome{class: classOf(err), err: err, unknown: true}
}

// activate POSTs the activation. When the API answers 404 and the job may create its end user, it
// creates them unless they exist, and POSTs again in the same attempt.
func (h *handler) activate(ctx context.Context, p, send tasks.Payload) outcome {
	out := h.post(ctx, p, send)
	if out.class != versori.ClassNotFound || p.EndUser == nil {
		return out
	}
	if st, uout := h.ensureUser(ctx, p, send, true); st == userFailed {
		return uout
	}
	// Created, or found: by another job for the user since the 404 (the POST goes through now), or
	// there all along (the 404 was about the integration or a connection, and comes again: not_found).
	return h.post(ctx, p, send)
}

// post makes one POST /activations.
func (h *handler) post(ctx context.Context, p, send tasks.Payload) outcome {
	var act *versori.Activated
	err := h.guard(func() (err error) {
		act, err = h.cfg.Client.Activate(ctx, send.Request)
		return err
	})
	if err == nil {
		return outcome{class: versori.ClassOK, result: metrics.ResultActivated, activationID: act.ID}
	}
	class := classOf(err)
	if class == versori.ClassConflict {
		// The API refused the POST because of existing state: the pair may be active already, or
		// an earlier POST may still be committing, which the next look-up, after the settle time,
		// finds.
		found, lerr := h.lookUp(ctx, p)
		switch {
		case lerr != nil:
			// The 409's class, not the look-up's: a gateway's 404 or 403 on the list must not
			// dead-letter a request the API only said conflicts.
			return outcome{class: class, err: fmt.Errorf("looking up the pair after %w: %w", err, lerr), unknown: true, posted: true}
		case found != nil:
			return outcome{class: versori.ClassOK, result: metrics.ResultAlreadyActive, activationID: found.ID}
		}
		return outcome{class: class, err: fmt.Errorf("%w (and the pair has no activation yet)", err), unknown: true, posted: true}
	}
	unknown := versori.IsOutcomeUnknown(err)
	return outcome{class: class, err: err, unknown: unknown, posted: unknown}
}

// userState is what ensureUser found or did.
type userState int

const (
	userFailed  userState = iota // a call failed: see the outcome
	userFound                    // the API knows the user
	userAbsent                   // the API does not know the user (and create was false)
	userCreated                  // the job created the user
	// userExisted: the create was answered 409, the user exists (counted as created all the same):
	// another job created them since the look-up, or the look-up's 404 was a gateway's.
	userExisted
)

// ensureUser looks p's end user up (GET, by external id) and, when the API does not know them and
// create is true, creates them. It always looks first: an earlier attempt's create whose answer was
// lost may have committed, and the create is not idempotent. A create whose answer is lost ends the
// attempt like a lost POST (posted: the next look-up waits for the API to settle).
func (h *handler) ensureUser(ctx context.Context, p, send tasks.Payload, create bool) (userState, outcome) {
	user := p.Request.UserID
	err := h.guard(func() error {
		_, err := h.cfg.Client.GetEndUser(ctx, user)
		return err
	})
	if err == nil {
		return userFound, outcome{}
	}
	if c := classOf(err); c != versori.ClassNotFound {
		return userFailed, outcome{class: c, err: fmt.Errorf("looking up the end user: %w", err)}
	}
	if !create {
		return userAbsent, outcome{}
	}
	err = h.guard(func() error {
		_, err := h.cfg.Client.CreateEndUser(ctx, send.EndUser.CreateRequest(user))
		return err
	})
	if c := classOf(err); err != nil && c != versori.ClassConflict {
		lost := versori.IsOutcomeUnknown(err)
		return userFailed, outcome{class: c, err: fmt.Errorf("creating the end user: %w", err), posted: lost}
	}
	// A 409 says a user with this external id exists: another job for the user created them, or
	// this job's own earlier create landed after the look-up. Either way the user is there.
	h.cfg.Metrics.EndUsersCreated.Inc()
	h.cfg.Batches.Add(p.Batch, batch.FieldCreatedUser, 1)
	h.log.Info("created the end user the API did not know", "user_id", user, "integration_id", p.Request.IntegrationID,
		"already_existed", err != nil)
	if err != nil {
		return userExisted, outcome{}
	}
	return userCreated, outcome{}
}

// update activates an inactive pair as activate does, and sets an active one's dynamic variables
// to the request's. It always looks the pair up first.
func (h *handler) update(ctx context.Context, p, send tasks.Payload) outcome {
	// An update's pair may be active whatever this job did (an earlier operation activated it), so
	// a list 404 never means "none" here: a gateway's would make the update POST a second activation.
	act, stop := h.lookFirst(ctx, p, send, true)
	if stop != nil {
		return *stop
	}
	if act == nil {
		out := h.activate(ctx, p, send)
		if out.class != versori.ClassOK || out.result != metrics.ResultAlreadyActive {
			return out
		}
		// The POST was answered 409 and the pair found active (the look-up lagged behind a write):
		// what the update asks for is still its variables.
		act = &versori.EndUserActivation{ID: out.activationID}
	}
	return h.putVariables(ctx, p, act.ID, false)
}

// putVariables sets the activation's dynamic variables to the request's. PUT is idempotent: an
// answer lost is simply sent again, after the API has settled (posted), since an earlier PUT landing
// after a later one would set the earlier variables. The API answers with the variables it holds,
// not whether they changed, so the result is variables_updated either way: there is no "unchanged".
// final says the attempt is finalLookUp's, whose failure leaves the pair's state unknown.
func (h *handler) putVariables(ctx context.Context, p tasks.Payload, activationID string, final bool) outcome {
	err := h.guard(func() error {
		_, err := h.cfg.Client.UpdateDynamicVariables(ctx, p.Request.UserID, activationID, p.Request.DynamicVariables)
		return err
	})
	if err == nil {
		return outcome{class: versori.ClassOK, result: metrics.ResultVariablesUpdated, activationID: activationID}
	}
	lost := versori.IsOutcomeUnknown(err)
	return outcome{class: classOf(err), err: fmt.Errorf("setting activation %s's variables: %w", activationID, err),
		posted: lost, unknown: final}
}

// deactivate deletes each of the pair's activations (a 404 is one gone already, once a look-up no
// longer lists it). reconcile says an earlier attempt may have deleted them: a pair then found
// inactive counts as deactivated, since the job's own DELETE may be why (already_inactive only when
// nothing of the job's can have been).
func (h *handler) deactivate(ctx context.Context, p tasks.Payload, reconcile bool) outcome {
	var acts []versori.EndUserActivation
	err := h.guard(func() (err error) {
		acts, err = h.cfg.Client.FindActivations(ctx, p.Request.UserID, p.Request.IntegrationID)
		return err
	})
	if err != nil && classOf(err) == versori.ClassNotFound {
		// The API answers the list of a user it does not know 404: then the pair has no activation.
		// A gateway's 404 would look the same, so the user is looked up.
		switch st, out := h.ensureUser(ctx, p, p, false); st {
		case userAbsent:
			err = nil
		case userFailed:
			out.unknown = reconcile
			return out
		}
	}
	if err != nil {
		// Unknown only after an attempt that may have deleted: a deactivation may be dead-lettered
		// otherwise, as what it leaves is the pair as it was (a requeue looks again).
		return outcome{class: classOf(err), err: fmt.Errorf("looking up the pair: %w", err), unknown: reconcile}
	}
	if len(acts) == 0 {
		if reconcile {
			return outcome{class: versori.ClassOK, result: metrics.ResultDeactivated}
		}
		return outcome{class: versori.ClassOK, result: metrics.ResultAlreadyInactive}
	}
	uctx := versori.WithEndUser(ctx, p.Request.UserID)
	var gone []string // answered 404
	for _, a := range acts {
		err := h.guard(func() error { return h.cfg.Client.DeleteActivation(uctx, a.ID) })
		if err == nil {
			continue
		}
		if classOf(err) == versori.ClassNotFound {
			gone = append(gone, a.ID)
			continue
		}
		lost := versori.IsOutcomeUnknown(err)
		return outcome{class: classOf(err), err: fmt.Errorf("deleting activation %s: %w", a.ID, err), unknown: lost, posted: lost}
	}
	if len(gone) > 0 {
		// A 404 is "deleted already" only if the API said it: a gateway's would look the same. The
		// pair is looked up again, and an activation still listed is deleted by the next attempt.
		var left []versori.EndUserActivation
		err := h.guard(func() (err error) {
			left, err = h.cfg.Client.FindActivations(ctx, p.Request.UserID, p.Request.IntegrationID)
			return err
		})
		for _, a := range left {
			if slices.Contains(gone, a.ID) {
				err = fmt.Errorf("activation %s is still listed after its DELETE was answered 404", a.ID)
				break
			}
		}
		if err != nil {
			return outcome{class: versori.ClassTransient, err: fmt.Errorf("checking the pair after a DELETE answered 404: %w", err), unknown: true}
		}
	}
	return outcome{class: versori.ClassOK, result: metrics.ResultDeactivated, activationID: acts[0].ID}
}

// lookUp returns the pair's activation, or nil when it has none. Finding more than one means a
// duplicate was made (by activator or by anything else): it is counted and logged with every id, for
// a person to deactivate the extra ones; activator never deletes an activation on its own.
func (h *handler) lookUp(ctx context.Context, p tasks.Payload) (*versori.EndUserActivation, error) {
	var acts []versori.EndUserActivation
	err := h.guard(func() (err error) {
		acts, err = h.cfg.Client.FindActivations(ctx, p.Request.UserID, p.Request.IntegrationID)
		return err
	})
	if err != nil || len(acts) == 0 {
		return nil, err
	}
	if len(acts) > 1 {
		ids := make([]string, len(acts))
		for i, a := range acts {
			ids[i] = a.ID
		}
		h.cfg.Metrics.DuplicateActivations.Inc()
		h.log.Error("the pair has more than one activation; activator deletes none: deactivate the extra ones (DELETE /activations/{id})",
			"user_id", p.Request.UserID, "integration_id", p.Request.IntegrationID, "activation_ids", ids)
	}
	return &acts[0], nil
}

// guard runs a call through the circuit breaker, if there is one.
func (h *handler) guard(call func() error) error {
	if h.cfg.Breaker == nil {
		return call()
	}
	return h.cfg.Breaker.Do(call)
}

// classOf is versori.Classify, plus the breaker's refusal.
func classOf(err error) versori.Class {
	if errors.Is(err, breaker.ErrOpen) {
		return tasks.ClassCircuitOpen
	}
	return versori.Classify(err)
}

// snoozeWait is how long a job waits without using up an attempt: as long as the rate limit or a
// shared back-off would have held its call, an open breaker's cool-down, or a 429's Retry-After
// (capped at Policy.MaxRetryAfter). A 429's wait is also shared with every worker.
func (h *handler) snoozeWait(ctx context.Context, j job, p tasks.Payload, out outcome) time.Duration {
	if wait, ok := limiterWait(out.err); ok {
		return wait
	}
	if out.class == tasks.ClassCircuitOpen {
		return h.cfg.Breaker.Cooldown()
	}
	pol := h.cfg.Policy
	wait, ok := versori.RetryAfterOf(out.err)
	if !ok {
		wait = pol.RateLimitWait
	}
	if wait > pol.MaxRetryAfter {
		h.cfg.Metrics.RetryAfterCapped.Inc()
		h.log.Warn("Retry-After is longer than MAX_RETRY_AFTER: waiting the maximum instead",
			"task_id", j.id, "retry_after", wait.String(), "max_retry_after", pol.MaxRetryAfter.String())
		wait = pol.MaxRetryAfter
	}
	if h.cfg.Backoff != nil {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
		defer cancel()
		if err := h.cfg.Backoff(bctx, wait); err != nil {
			h.log.Warn("could not share the rate-limit back-off", "error", err.Error())
		}
	}
	return wait
}

// checkKey asks CheckKey whether the API key is refused; without it, a refusal is taken to be the
// key's.
func (h *handler) checkKey(ctx context.Context, sent time.Time) keyState {
	if h.cfg.CheckKey == nil {
		return keyRefused
	}
	return h.cfg.CheckKey(ctx, sent)
}

func (h *handler) done(j job, p tasks.Payload, out outcome) error {
	if h.cfg.Results != nil {
		h.cfg.Results.Add(j.queue, j.id, out.activationID)
	}
	h.cfg.Metrics.Activated(out.result)
	h.cfg.Batches.Add(p.Batch, out.result, 1)
	h.logOutcome(slog.LevelInfo, j, p, out, slog.String("result", out.result), slog.String("activation_id", out.activationID))
	return nil
}

// storeTimeout bounds a dead-letter write, which must happen even when the job's context is done.
const storeTimeout = 5 * time.Second

// storeRetryWait is how long a job whose dead letter could not be stored waits before it tries
// again.
const storeRetryWait = 5 * time.Second

// deadLetter stores the job's dead letter and drops its task. When the store cannot be written, the
// task is retried instead (counting an attempt, so that the next one looks first): the store, not
// asynq's archive, is where a dead letter must end up. It is stored only while this run still holds
// the task's lease: once asynq has taken the task back (the job's deadline passed), a retry may be
// running already, and it decides anew.
func (h *handler) deadLetter(ctx context.Context, j job, p tasks.Payload, reason tasks.Reason, class versori.Class, cause error) error {
	p = sealPlaintext(p, h.cfg.Keys)
	e := deadletter.Entry{
		ID:            j.id,
		UserID:        p.Request.UserID,
		IntegrationID: p.Request.IntegrationID,
		Reason:        reason,
		Error:         cause.Error(),
		Attempts:      j.retried + 1,
		FailedAt:      time.Now().UTC(),
		Queue:         j.queue,
	}
	e.Keep(p)
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	added, err := h.cfg.Store.AddWhileMember(wctx, e, rediskeys.AsynqLease(j.queue))
	if errors.Is(err, deadletter.ErrNotHeld) {
		h.log.Warn("the job's lease was gone before its dead letter was stored; its retry decides again",
			"task_id", j.id, "reason", string(reason))
		return &waitError{Wait: storeRetryWait, Counts: true, Err: fmt.Errorf("dead letter (%s) not stored: %w", reason, err)}
	}
	if err != nil {
		h.log.Error("could not store the dead letter; the job will try again", "task_id", j.id, "reason", string(reason),
			"error", err.Error())
		return &waitError{Wait: storeRetryWait, Counts: true, Err: fmt.Errorf("storing the dead letter (%s): %w", reason, err)}
	}
	if added {
		h.cfg.Metrics.DeadLetters.WithLabelValues(string(reason)).Inc()
		h.cfg.Batches.Add(p.Batch, batch.FieldDeadPrefix+string(reason), 1)
	}
	h.logOutcome(slog.LevelWarn, j, p, outcome{class: class, err: cause}, slog.String("action", "dead_letter"), slog.String("reason", string(reason)))
	return deadLetterError(reason, cause)
}

// sealPlaintext returns p with plaintext credentials (the opt-out's, or a release's before keys)
// sealed, when k has a key: a dead letter is a new record, which must not copy them in plain text.
// Should sealing fail, p is returned as it is: losing the dead letter would be worse.
func sealPlaintext(p tasks.Payload, k *tasks.Keyring) tasks.Payload {
	if k.Current() != "" && p.HasSecrets() {
		if sealed := p; sealed.Seal(k) == nil {
			return sealed
		}
	}
	return p
}

func (h *handler) pause(ctx context.Context, cause error) {
	if h.cfg.Pause == nil {
		return
	}
	if err := h.cfg.Pause(ctx); err != nil {
		h.log.Error("could not pause the queue", "error", err.Error())
		return
	}
	h.cfg.Metrics.QueuePaused.Set(1)
	if !h.cfg.PerUserAuth {
		h.log.Error("the API refused the API key: queue paused, jobs kept; fix the key: the next accepted probe resumes the queue, or run `enqueue resume`",
			"error", cause.Error())
		return
	}
	attrs := []any{"error", cause.Error()}
	msg := "the API refused the signing key (revoked or deleted, or the clocks differ): queue paused, jobs kept; " +
		"the queue resumes by itself once a probe is accepted"
	if skew, ok := h.cfg.Client.ClockSkew(); ok {
		attrs = append(attrs, "api_clock_skew", skew.String())
		if skew > versori.ClockSkewTolerance || skew < -versori.ClockSkewTolerance {
			msg = "the API refused the signing key, and its clock differs from ours by more than " +
				versori.ClockSkewTolerance.String() + ": fix this host's clock (NTP); queue paused, jobs kept, " +
				"the queue resumes by itself once a probe is accepted"
		}
	}
	h.log.Error(msg, attrs...)
}

// credential names what authenticates the worker's calls, for messages.
func (h *handler) credential() string {
	if h.cfg.PerUserAuth {
		return "signing key"
	}
	return "API key"
}

func (h *handler) interrupted() bool {
	return h.cfg.Interrupt != nil && h.cfg.Interrupt.Err() != nil
}

// logOutcome writes the job's one line per attempt. Typed attributes, because at thousands of jobs
// a second boxing each value in an any showed in the profile.
func (h *handler) logOutcome(level slog.Level, j job, p tasks.Payload, out outcome, extra ...slog.Attr) {
	ctx := context.Background()
	if !h.log.Enabled(ctx, level) {
		return
	}
	attrs := make([]slog.Attr, 0, 9)
	attrs = append(attrs,
		slog.String("task_id", j.id),
		slog.String("user_id", p.Request.UserID),
		slog.String("integration_id", p.Request.IntegrationID),
		slog.String("class", string(out.class)),
		slog.Int("attempt", j.retried+1),
		slog.Int64("duration_ms", time.Since(j.start).Milliseconds()),
	)
	if out.err != nil {
		attrs = append(attrs, slog.String("error", out.err.Error()))
	}
	h.log.LogAttrs(ctx, level, "job", append(attrs, extra...)...)
}

// stackRoom is how much goroutine stack a job uses at its deepest (the JSON decoder and encoder, the
// HTTP client, go-redis), rounded up.
const stackRoom = 16 << 10

// growStack grows the job's goroutine stack to stackRoom while it is shallow. asynq runs each job on
// a new goroutine, whose small stack otherwise grows step by step deep inside the JSON decoder, and a
// deep stack costs a lookup per frame to copy: growing it first cut the worker's CPU per job by about
// five percent with no API latency (make bench ARGS='-latency 0ms').
//
//go:noinline
func growStack() {
	var room [stackRoom]byte
	keep(room[:])
}

// keep stops the compiler from dropping growStack's array.
//
//go:noinline
func keep([]byte) {}

// scrubSecrets returns err with every credential value of p (its connections', its end user's
// primary connection's) that its text quotes replaced by [redacted], so that an API error echoing a
// secret (a message, a field error) never reaches a log line or a dead letter. The returned error
// unwraps to err, so that it classifies as err does.
func scrubSecrets(err error, p tasks.Payload) error {
	if err == nil {
		return nil
	}
	var values []string
	for _, c := range p.Request.Connections {
		values = append(values, secretStrings(c.Credentials)...)
	}
	if p.EndUser != nil && p.EndUser.PrimaryConnection != nil {
		values = append(values, secretStrings(p.EndUser.PrimaryConnection.Credentials)...)
	}
	// Longest first, so that a value that contains another is replaced whole.
	slices.SortFunc(values, func(a, b string) int { return len(b) - len(a) })
	text := err.Error()
	scrubbed := text
	for _, v := range values {
		scrubbed = strings.ReplaceAll(scrubbed, v, "[redacted]")
	}
	if scrubbed == text {
		return err
	}
	return &scrubbedError{err: err, text: scrubbed}
}

// minSecretLen is the shortest credential value scrubbed from error text: shorter ones ("", "1",
// "EU") would garble messages and are no secret worth the name.
const minSecretLen = 4

// secretStrings lists the string values (and numbers, as written) within a credentials object.
func secretStrings(creds json.RawMessage) []string {
	if len(creds) == 0 {
		return nil
	}
	var v any
	// UseNumber keeps a number as written (a PIN, an account number), so that it is scrubbed too.
	dec := json.NewDecoder(bytes.NewReader(creds))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return nil
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			if len(v) >= minSecretLen {
				out = append(out, v)
			}
		case json.Number:
			if len(v) >= minSecretLen {
				out = append(out, string(v))
			}
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	return out
}

type scrubbedError struct {
	err  error
	text string
}

func (e *scrubbedError) Error() string { return e.text }
func (e *scrubbedError) Unwrap() error { return e.err }
