package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	wait "github.com/versori/activator/internal/background"
	"github.com/versori/activator/internal/intake"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

// ModeLatency measures how long a signup event takes from the intake's 202 to the API call, with a
// worker idle and with it busy, and what an idle worker costs Redis.
const ModeLatency = "latency"

// pollDefault, in Config.PollIntervals, runs the worker with its own default POLL_INTERVAL.
const pollDefault = "default"

// capacityJobs is the backlog drained to find the worker's capacity, half of which the busy phase
// feeds it.
const capacityJobs = 4000

// Latency is the latency mode's report: one pass per POLL_INTERVAL.
type Latency struct {
	Events int           `json:"events"`
	GapMS  float64       `json:"gapMs"`
	Passes []LatencyPass `json:"passes"`
}

// pairCall is the part of a /_standin/calls entry the latency mode reads.
type pairCall struct {
	At   time.Time    `json:"at"`
	Op   string       `json:"op"`
	Pair versori.Pair `json:"pair"`
}

// LatencyPass is one worker process, started with one POLL_INTERVAL: its idle Redis cost, then
// signup events while it is idle, its capacity, then signup events while it drains a steady stream
// at half that.
type LatencyPass struct {
	PollInterval string       `json:"pollInterval"` // "default": the worker's own
	IdleRedis    IdleRedis    `json:"idleRedis"`
	Idle         LatencyPhase `json:"idle"`
	// CapacityJobsPerSec is the API call rate while the worker drained a backlog of capacityJobs.
	CapacityJobsPerSec float64      `json:"capacityJobsPerSec"`
	Busy               LatencyPhase `json:"busy"`
}

// IdleRedis is what one idle worker process sends Redis, from MONITOR on the bench's database.
type IdleRedis struct {
	WindowSec    float64    `json:"windowSec"`
	ClientPerSec float64    `json:"clientPerSec"` // commands the worker's clients sent (round trips or pipelined)
	ScriptPerSec float64    `json:"scriptPerSec"` // commands run inside the scripts those sent
	Client       []CmdShare `json:"client"`       // PerJob is per second here
	Script       []CmdShare `json:"script"`
}

// LatencyPhase is one series of signup events.
type LatencyPhase struct {
	Events   int       `json:"events"`
	Measured int       `json:"measured"` // events whose activation the API received
	MedianMS float64   `json:"medianMs"`
	P90MS    float64   `json:"p90Ms"`
	WorstMS  float64   `json:"worstMs"`
	BestMS   float64   `json:"bestMs"`
	AllMS    []float64 `json:"allMs"`          // of the events measured, in the order sent
	Lost     []int     `json:"lost,omitempty"` // the events not measured, by their place in the order sent
	// IntakeMS is the median time the intake took to answer 202, which precedes the latency.
	IntakeMS float64 `json:"intakeMs"`
	// AheadMedian and AheadMax are the pending tasks an event found queued ahead of it (LLEN just
	// before it was posted): the FIFO it waits through besides the poll.
	AheadMedian float64 `json:"aheadMedian"`
	AheadMax    int64   `json:"aheadMax"`
	// BackgroundTarget and BackgroundRate are the busy phase's background jobs/s, asked and
	// enqueued.
	BackgroundTarget float64 `json:"backgroundTarget,omitempty"`
	BackgroundRate   float64 `json:"backgroundRate,omitempty"`
	Load             string  `json:"load"`
}

// LatencyConfig is the latency mode's settings.
type LatencyConfig struct {
	Events     int           // signed signup events per phase (default 40)
	EventGap   time.Duration // between two events, on a fixed schedule (default 250 ms)
	IdleWindow time.Duration // how long the idle worker's Redis commands are counted (default 10 s)
	// BusyRate is the background jobs/s of the busy phase; 0 is half the capacity measured on a
	// backlog just before.
	BusyRate int
	// PollIntervals are the POLL_INTERVAL of each pass, one worker process each; "default" leaves
	// the worker's own (the default).
	PollIntervals []string
}

// defaults fills and checks the latency mode's settings.
func (c *LatencyConfig) defaults() error {
	if c.Events <= 0 {
		c.Events = 40
	}
	if c.EventGap <= 0 {
		c.EventGap = 250 * time.Millisecond
	}
	if c.IdleWindow <= 0 {
		c.IdleWindow = 10 * time.Second
	}
	if c.BusyRate < 0 {
		return fmt.Errorf("-busy-rate %d: want 0 (half the capacity) or more", c.BusyRate)
	}
	if len(c.PollIntervals) == 0 {
		c.PollIntervals = []string{pollDefault}
	}
	for i, p := range c.PollIntervals {
		p = strings.TrimSpace(p)
		if d, err := time.ParseDuration(p); p != pollDefault && (err != nil || d <= 0) {
			return fmt.Errorf("-poll-intervals: %q is neither %s nor a positive duration", p, pollDefault)
		}
		c.PollIntervals[i] = p
	}
	return nil
}

// latency runs one pass per POLL_INTERVAL asked for.
func (b *bencher) latency(ctx context.Context) (*Latency, error) {
	l := &Latency{Events: b.cfg.Signup.Events, GapMS: float64(b.cfg.Signup.EventGap) / float64(time.Millisecond)}
	for _, poll := range b.cfg.Signup.PollIntervals {
		p, err := b.latencyPass(ctx, poll)
		l.Passes = append(l.Passes, p)
		if err != nil {
			return l, fmt.Errorf("POLL_INTERVAL %s: %w", poll, err)
		}
	}
	return l, nil
}

// latencyRun is one pass's processes.
type latencyRun struct {
	b      *bencher
	name   string
	sin    *standin
	worker *proc
	intake *proc
	url    string // the intake's
	secret string
	http   *http.Client
}

func (r *latencyRun) stop() {
	for _, p := range []*proc{r.intake, r.worker} {
		if p != nil {
			_ = p.stop(30 * time.Second)
		}
	}
	if r.sin != nil {
		_ = r.sin.stop(15 * time.Second)
	}
}

func (b *bencher) latencyPass(ctx context.Context, poll string) (LatencyPass, error) {
	b.seq++
	p := LatencyPass{PollInterval: poll}
	r := &latencyRun{b: b, name: fmt.Sprintf("%03d-latency", b.seq), http: &http.Client{Timeout: 30 * time.Second}}
	defer r.stop()
	if err := b.rdb.FlushDB(ctx).Err(); err != nil {
		return p, err
	}
	var err error
	if r.sin, err = startStandin(b.bins.standin, b.dir, r.name+"-standin", b.cfg.Latency); err != nil {
		return p, err
	}
	if err := r.startWorker(ctx, poll); err != nil {
		return p, err
	}
	b.logf("POLL_INTERVAL %s: worker idle, counting its Redis commands for %s", poll, b.cfg.Signup.IdleWindow)
	if p.IdleRedis, err = b.idleRedis(ctx, b.cfg.Signup.IdleWindow); err != nil {
		return p, err
	}
	b.logf("POLL_INTERVAL %s: idle worker sends %.1f commands/s (%.1f more inside scripts)", poll, p.IdleRedis.ClientPerSec, p.IdleRedis.ScriptPerSec)
	if err := r.startIntake(ctx); err != nil {
		return p, err
	}
	if p.Idle, err = r.events(ctx, "idle", nil); err != nil {
		return p, err
	}
	b.logf("POLL_INTERVAL %s idle: median %.0f ms, p90 %.0f, worst %.0f (%d/%d)", poll, p.Idle.MedianMS, p.Idle.P90MS, p.Idle.WorstMS, p.Idle.Measured, p.Idle.Events)
	if p.CapacityJobsPerSec, err = r.capacity(ctx); err != nil {
		return p, err
	}
	rate := float64(b.cfg.Signup.BusyRate)
	if rate <= 0 {
		rate = p.CapacityJobsPerSec / 2
	}
	b.logf("POLL_INTERVAL %s: capacity %.0f jobs/s; busy phase at %.0f jobs/s", poll, p.CapacityJobsPerSec, rate)
	if p.Busy, err = r.busy(ctx, rate); err != nil {
		return p, err
	}
	b.logf("POLL_INTERVAL %s busy: median %.0f ms, p90 %.0f, worst %.0f (%d/%d), background %.0f jobs/s, queued ahead median %.0f max %d",
		poll, p.Busy.MedianMS, p.Busy.P90MS, p.Busy.WorstMS, p.Busy.Measured, p.Busy.Events, p.Busy.BackgroundRate, p.Busy.AheadMedian, p.Busy.AheadMax)
	return p, nil
}

// startWorker starts the real worker with its defaults: only where it finds Redis and the API, and
// a metrics port of its own, are set (and POLL_INTERVAL unless poll is pollDefault).
func (r *latencyRun) startWorker(ctx context.Context, poll string) error {
	b := r.b
	maddr, err := freeAddr()
	if err != nil {
		return err
	}
	env := []string{
		"REDIS_URL=redis://" + b.cfg.RedisAddr + "/" + strconv.Itoa(b.cfg.RedisDB),
		"VERSORI_BASE_URL=" + r.sin.url,
		"VERSORI_API_KEY=" + versoritest.DefaultAPIKey,
		"VERSORI_HUB_ID=" + versoritest.DefaultHubID,
		"VERSORI_SIGNING_KEY_ID=", "VERSORI_SIGNING_KEY_FILE=",
		"QUEUE=" + queue,
		"METRICS_ADDR=" + maddr,
	}
	if poll != pollDefault {
		env = append(env, "POLL_INTERVAL="+poll)
	}
	env = append(env, b.cfg.WorkerEnv...)
	if r.worker, err = startProc(b.dir, r.name+"-worker", env, b.bins.worker); err != nil {
		return err
	}
	if err := waitReady(ctx, "http://"+maddr+"/readyz", r.worker); err != nil {
		return err
	}
	// The worker's start-up work (the first archive sweep, asynq's first heartbeat and checks) is
	// over by then, so that the idle window sees the steady state.
	return wait.Sleep(ctx, 2*time.Second)
}

// startIntake starts `enqueue serve` with a webhook secret of its own.
func (r *latencyRun) startIntake(ctx context.Context) error {
	b := r.b
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	r.secret = "whsec_" + base64.StdEncoding.EncodeToString(key)
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	env := []string{
		"REDIS_URL=redis://" + b.cfg.RedisAddr + "/" + strconv.Itoa(b.cfg.RedisDB),
		"INTAKE_WEBHOOK_SECRET=" + r.secret,
	}
	if r.intake, err = startProc(b.dir, r.name+"-intake", env, b.bins.enqueue, "serve", "--addr", addr, "--queue", queue); err != nil {
		return err
	}
	r.url = "http://" + addr
	return waitReady(ctx, r.url+"/readyz", r.intake)
}

// waitReady waits up to 30 s for url to answer 200 while p runs.
func waitReady(ctx context.Context, url string, p *proc) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := adminClient.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if p.exited() {
			return fmt.Errorf("%s exited before %s answered: %w", p.name, url, p.exitErr())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within 30 s (log: %s)%s", url, p.log, p.tail())
		}
		if err := wait.Sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// idleRedis counts, with MONITOR, the commands sent to the bench's database for window, while
// nothing but the idle worker uses it.
func (b *bencher) idleRedis(ctx context.Context, window time.Duration) (IdleRedis, error) {
	m, err := startMonitor(b.cfg.RedisAddr, b.cfg.RedisDB)
	if err != nil {
		return IdleRedis{}, err
	}
	start := time.Now()
	if err := wait.Sleep(ctx, window); err != nil {
		_, _, _ = m.stop(context.WithoutCancel(ctx), b.rdb)
		return IdleRedis{}, err
	}
	client, script, err := m.stop(ctx, b.rdb)
	if err != nil {
		return IdleRedis{}, err
	}
	sec := time.Since(start).Seconds()
	perSec := func(c cmdCounts) []CmdShare {
		out := perJob(c, 1)
		for i := range out {
			out[i].PerJob /= sec
		}
		return out
	}
	return IdleRedis{WindowSec: sec, ClientPerSec: float64(client.total()) / sec, ScriptPerSec: float64(script.total()) / sec,
		Client: perSec(client), Script: perSec(script)}, nil
}

// signupRequest is the body of a signup event for user: an existing connection, as the jobs file's.
func signupRequest(user string) versori.ActivationRequest {
	return versori.ActivationRequest{UserID: user, IntegrationID: "01JDCRM0000000000000000000",
		Connections:      []versori.ActivationConnection{{TemplateID: "01JDCRMTP10000000000000000", ConnectionID: "01JDC0NN000000000000000000"}},
		DynamicVariables: json.RawMessage(`{"region":"eu"}`)}
}

// events posts Config.Events signed signup events to the intake, Config.EventGap apart on a fixed
// schedule, and measures each from its 202 to the stand-in receiving its POST /activations. sent,
// if not nil, is called a second after the last event: the stand-in's list of calls is read only
// after it, since serving a long list costs CPU the last events would otherwise wait for.
func (r *latencyRun) events(ctx context.Context, phase string, sent func()) (LatencyPhase, error) {
	b := r.b
	ph := LatencyPhase{Events: b.cfg.Signup.Events, Load: loadAvg()}
	wh, err := standardwebhooks.NewWebhook(r.secret)
	if err != nil {
		return ph, err
	}
	users := make([]string, b.cfg.Signup.Events)
	accepted := make([]time.Time, b.cfg.Signup.Events)
	intakeMS := make([]float64, 0, b.cfg.Signup.Events)
	ahead := make([]float64, 0, b.cfg.Signup.Events)
	t0 := time.Now()
	for i := range b.cfg.Signup.Events {
		if err := wait.Sleep(ctx, time.Until(t0.Add(time.Duration(i)*b.cfg.Signup.EventGap))); err != nil {
			return ph, err
		}
		users[i] = fmt.Sprintf("signup-%s-%s-%03d", r.name, phase, i)
		body, err := json.Marshal(signupRequest(users[i]))
		if err != nil {
			return ph, err
		}
		n, err := b.rdb.LLen(ctx, rediskeys.AsynqPending(queue)).Result()
		if err != nil {
			return ph, err
		}
		ahead = append(ahead, float64(n))
		ph.AheadMax = max(ph.AheadMax, n)
		start := time.Now()
		if accepted[i], err = r.post(ctx, wh, fmt.Sprintf("%s-%s-%d", r.name, phase, i), body); err != nil {
			return ph, fmt.Errorf("signup event %d: %w", i, err)
		}
		intakeMS = append(intakeMS, ms(accepted[i].Sub(start)))
	}
	ph.IntakeMS, ph.AheadMedian = median(intakeMS), median(ahead)
	if err := wait.Sleep(ctx, time.Second); err != nil {
		return ph, err
	}
	if sent != nil {
		sent()
	}
	calls, err := r.waitCalls(ctx, users, 30*time.Second)
	if err != nil {
		return ph, err
	}
	for i, u := range users {
		at, ok := calls[strings.ToUpper(u)]
		if !ok {
			ph.Lost = append(ph.Lost, i)
			continue
		}
		// Same machine, so the stand-in's wall clock is the bench's. The worker may take the job
		// before the 202 reaches the bench, which would show as a figure below zero.
		ph.AllMS = append(ph.AllMS, ms(at.Sub(accepted[i])))
		ph.Measured++
	}
	ph.MedianMS, ph.P90MS, ph.WorstMS, ph.BestMS = summarize(ph.AllMS)
	if ph.Measured < ph.Events {
		return ph, fmt.Errorf("%s: %d of %d signup events reached the API within 30 s", phase, ph.Measured, ph.Events)
	}
	return ph, nil
}

// post sends one signed signup event and returns when its 202 arrived.
func (r *latencyRun) post(ctx context.Context, wh *standardwebhooks.Webhook, id string, body []byte) (time.Time, error) {
	now := time.Now()
	sig, err := wh.Sign(id, now, body)
	if err != nil {
		return time.Time{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url+"/v1/activations", bytes.NewReader(body))
	if err != nil {
		return time.Time{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(intake.HeaderWebhookID, id)
	req.Header.Set(intake.HeaderWebhookTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(intake.HeaderWebhookSignature, sig)
	resp, err := r.http.Do(req)
	if err != nil {
		return time.Time{}, fmt.Errorf("intake: %w", err)
	}
	at := time.Now() // the status line and headers are in: the 202 has arrived
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return time.Time{}, fmt.Errorf("intake answered %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return at, nil
}

// waitCalls waits until the stand-in has received a POST /activations for each of users, or
// timeout, and returns when it received the first for each, keyed by the user in upper case.
func (r *latencyRun) waitCalls(ctx context.Context, users []string, timeout time.Duration) (map[string]time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		var calls []pairCall
		if err := r.sin.get("/_standin/calls", &calls); err != nil {
			return nil, err
		}
		want := map[string]bool{}
		for _, u := range users {
			want[strings.ToUpper(u)] = true
		}
		got := map[string]time.Time{}
		for _, c := range calls {
			u := strings.ToUpper(c.Pair.UserID)
			if c.Op != versori.OpActivate || !want[u] {
				continue
			}
			if t, ok := got[u]; !ok || c.At.Before(t) {
				got[u] = c.At
			}
		}
		if len(got) == len(want) || time.Now().After(deadline) {
			return got, nil
		}
		if r.worker.exited() {
			return got, fmt.Errorf("the worker exited: %w", r.worker.exitErr())
		}
		if err := wait.Sleep(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// capacity queues a backlog of capacityJobs and returns the rate at which the API received them.
func (r *latencyRun) capacity(ctx context.Context) (float64, error) {
	b := r.b
	file, err := b.jobsFile(capacityJobs)
	if err != nil {
		return 0, err
	}
	prod := producer.New(b.rdb, producer.Config{Queue: queue})
	sum, err := prod.EnqueueFile(ctx, producer.FileOptions{Path: file, Batch: "capacity"})
	if err != nil || sum.Enqueued != capacityJobs {
		return 0, fmt.Errorf("enqueueing %d jobs: %+v %v", capacityJobs, sum, err)
	}
	// Counted from the stand-in's stats until the backlog is in, so that the long list of calls is
	// read once.
	want := capacityJobs + b.cfg.Signup.Events
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := r.sin.stats()
		if err != nil {
			return 0, err
		}
		if st.Activations >= want {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the backlog of %d jobs: %d of %d activations after 2 minutes", capacityJobs, st.Activations, want)
		}
		if r.worker.exited() {
			return 0, fmt.Errorf("the worker exited: %w", r.worker.exitErr())
		}
		if err := wait.Sleep(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
	}
	var calls []pairCall
	if err := r.sin.get("/_standin/calls", &calls); err != nil {
		return 0, err
	}
	var first, last time.Time
	n := 0
	for _, c := range calls {
		if c.Op != versori.OpActivate || !strings.HasPrefix(strings.ToLower(c.Pair.UserID), "user-") {
			continue
		}
		n++
		if first.IsZero() || c.At.Before(first) {
			first = c.At
		}
		last = latest(last, c.At)
	}
	if d := last.Sub(first).Seconds(); n > 1 && d > 0 {
		return float64(n-1) / d, nil
	}
	return 0, fmt.Errorf("the backlog's %d calls took no measurable time", n)
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// busy runs the signup events while a producer enqueues background jobs at rate per second.
func (r *latencyRun) busy(ctx context.Context, rate float64) (LatencyPhase, error) {
	b := r.b
	bctx, stop := context.WithCancel(ctx)
	var enqueued atomic.Int64
	var bgErr error
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() { bgErr = background(bctx, b, rate, &enqueued) })
	// The stream reaches its steady state before the first event.
	err := wait.Sleep(ctx, 2*time.Second)
	var ph LatencyPhase
	var elapsed time.Duration
	if err == nil {
		ph, err = r.events(ctx, "busy", func() {
			stop()
			elapsed = time.Since(start)
		})
	}
	stop()
	wg.Wait()
	if elapsed == 0 {
		elapsed = time.Since(start)
	}
	ph.BackgroundTarget = rate
	ph.BackgroundRate = float64(enqueued.Load()) / elapsed.Seconds()
	if err == nil && bgErr != nil && !errors.Is(bgErr, context.Canceled) {
		err = fmt.Errorf("background stream: %w", bgErr)
	}
	return ph, err
}

// background enqueues jobs of users "busy-…" at rate per second, on a 10 ms schedule, until ctx
// ends; up to 16 enqueues run at once so that one slow round trip does not hold the schedule.
func background(ctx context.Context, b *bencher, rate float64, enqueued *atomic.Int64) error {
	prod := producer.New(b.rdb, producer.Config{Queue: queue})
	const tick = 10 * time.Millisecond
	jobs := make(chan int, 1024)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				res, err := prod.Enqueue(ctx, signupRequest(fmt.Sprintf("busy-%07d", i)), producer.WithBatch("busy"))
				if err != nil {
					if ctx.Err() == nil {
						firstErr.CompareAndSwap(nil, &err)
					}
					continue
				}
				if res.Status == producer.Enqueued {
					enqueued.Add(1)
				}
			}
		})
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	next := 0
	for {
		select {
		case <-ctx.Done():
			if p := firstErr.Load(); p != nil {
				return *p
			}
			return ctx.Err()
		case <-t.C:
		}
		due := int(rate * time.Since(start).Seconds())
		for ; next < due; next++ {
			select {
			case jobs <- next:
			default: // the enqueuers are behind: the rate reported shows it
			}
		}
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// summarize returns the median, 90th percentile (nearest rank), worst and best of xs; all 0 when
// xs is empty (JSON has no NaN).
func summarize(xs []float64) (med, p90, worst, best float64) {
	s := slices.Clone(xs)
	if len(s) == 0 {
		return 0, 0, 0, 0
	}
	slices.Sort(s)
	rank := int(math.Ceil(0.9*float64(len(s)))) - 1
	return median(s), s[max(rank, 0)], s[len(s)-1], s[0]
}

// print writes the latency mode's tables.
func (l *Latency) print(w io.Writer) {
	fmt.Fprintf(w, "\nsignup event to activation call: from `enqueue serve`'s 202 to the stand-in receiving the POST, %d signed events %.0f ms apart\n", l.Events, l.GapMS)
	fmt.Fprintf(w, "(the worker is the real cmd/worker with its defaults, given only Redis, the stand-in, QUEUE and METRICS_ADDR, and POLL_INTERVAL as the table says; the activator worker line above is the compare modes')\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "POLL_INTERVAL\tphase\tmeasured\tmedian ms\tp90 ms\tworst ms\tbest ms\tintake 202 ms\tqueued ahead (median/max)\tbackground jobs/s (asked/enqueued)\tcapacity jobs/s\tload\t")
	for _, p := range l.Passes {
		for _, x := range []struct {
			name string
			ph   LatencyPhase
		}{{"idle", p.Idle}, {"busy", p.Busy}} {
			bg, capacity := "", ""
			if x.name == "busy" {
				bg = fmt.Sprintf("%.0f/%.0f", x.ph.BackgroundTarget, x.ph.BackgroundRate)
				capacity = fmt.Sprintf("%.0f", p.CapacityJobsPerSec)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.1f\t%.0f/%d\t%s\t%s\t%s\t\n", p.PollInterval, x.name, x.ph.Measured, x.ph.Events,
				x.ph.MedianMS, x.ph.P90MS, x.ph.WorstMS, x.ph.BestMS, x.ph.IntakeMS, x.ph.AheadMedian, x.ph.AheadMax, bg, capacity, x.ph.Load)
		}
	}
	tw.Flush()
	for _, p := range l.Passes {
		ir := p.IdleRedis
		fmt.Fprintf(w, "idle worker, POLL_INTERVAL %s: %.1f commands/s sent, %.1f more inside scripts (MONITOR on the bench's database, %.0f s)\n",
			p.PollInterval, ir.ClientPerSec, ir.ScriptPerSec, ir.WindowSec)
		fmt.Fprintf(w, "  sent:    %s\n  scripts: %s\n", rates(ir.Client), rates(ir.Script))
	}
}

func rates(cs []CmdShare) string {
	var parts []string
	for _, c := range cs {
		parts = append(parts, fmt.Sprintf("%s %.2f/s", c.Command, c.PerJob))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
