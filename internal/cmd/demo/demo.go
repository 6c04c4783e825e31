// Package demo runs the whole pipeline on an embedded default: an in-process Redis (miniredis), the
// Versori stand-in with some faults, the real enqueue path on a sample file, and the real worker,
// then prints what happened. Then it onboards end users the API does not know yet (rows with
// endUser) and offboards part of the sample (a deactivation file). It is what `make demo` runs, so
// that a first run needs no Redis server and no Versori account.
package demo

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/inspect"
	"github.com/versori/activator/internal/logging"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

//go:embed sample.jsonl
var sample []byte

// onboardRows are the onboarding step's rows: 50 end users the API does not know yet, each row with
// the endUser its job creates; every fifth user has a second row, on billing, whose job races the
// first's to create them.
//
//go:embed onboard.jsonl
var onboardRows []byte

// offboardRows is how many of the sample's last rows the offboarding step deactivates: half of them
// active, half dead-lettered (billing rows without their connection).
const offboardRows = 100

// The sample's integrations: Billing requires a connection template that its rows do not bind.
const (
	billingIntegration = "01JDB1111NG000000000000000"
	billingTemplate    = "01JDB1111NGTP1000000000000"
)

// Options configures a demo run.
type Options struct {
	File        string // input file; default the embedded sample
	Concurrency int    // worker concurrency (default 50)
	Faults      versoritest.Faults
	Timeout     time.Duration // give up after this long (default 2 minutes)
	Log         io.Writer     // worker logs (default discarded)
}

// DefaultFaults are the stand-in's faults in a demo: some 503s, 429s and responses dropped after the
// activation was committed, which the worker must ride out without a duplicate. Creating end users
// and deleting activations meet them too.
func DefaultFaults() versoritest.Faults {
	return versoritest.Faults{Latency: 2 * time.Millisecond, ServerErrorRate: 0.03, RateLimitRate: 0.005,
		RetryAfter: "1", DropAfterCommitRate: 0.02, LateCommitRate: 0.01, WriteOps: versoritest.AllWriteOps}
}

// Result is what a demo run did.
type Result struct {
	Enqueued     int
	Rejected     int
	Activated    int // activations the stand-in holds
	Duplicates   int // pairs activated more than once: always 0
	DeadLetters  map[tasks.Reason]int64
	APICalls     int
	Elapsed      time.Duration
	StandinStats versoritest.Stats // after the first step

	// Onboarding: the batch of onboard.jsonl's rows, for end users the API did not know, and how
	// many of those users exist after it (each created once).
	Onboard      inspect.BatchStatus
	NewUsers     int
	UsersCreated int
	// Offboarding: the batch of the deactivation file, and the activations the stand-in holds after.
	Offboard         inspect.BatchStatus
	FinalActivations int
	FinalStats       versoritest.Stats
}

// Run runs the demo and prints its summary to out.
func Run(ctx context.Context, out io.Writer, o Options) (Result, error) {
	var res Result
	if o.Concurrency <= 0 {
		o.Concurrency = 50
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()

	mr, err := miniredis.Run()
	if err != nil {
		return res, fmt.Errorf("starting in-process Redis: %w", err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	api := versoritest.NewServer(versoritest.Options{Faults: o.Faults, Seed: 7})
	api.RequireConnection(billingIntegration, billingTemplate)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	hs := &http.Server{Handler: api, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	defer hs.Close()

	dir, err := os.MkdirTemp("", "activator-demo-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	path := o.File
	if path == "" {
		path = filepath.Join(dir, "sample.jsonl")
		if err := os.WriteFile(path, sample, 0o600); err != nil {
			return res, err
		}
	}
	// %.3g: 0.5% stays 0.5%, and 3% is not 3.0000000000000004%.
	fmt.Fprintf(out, "activator demo: in-process Redis %s, Versori stand-in http://%s (faults: %.3g%% 503, %.3g%% 429, %.3g%% dropped after commit, %.3g%% 504 then committed later)\n",
		mr.Addr(), ln.Addr(), o.Faults.ServerErrorRate*100, o.Faults.RateLimitRate*100, o.Faults.DropAfterCommitRate*100,
		o.Faults.LateCommitRate*100)

	// The sample gives new connections credentials, which are never stored in plain text: the
	// demo seals them with a key made for the run, as ACTIVATOR_ENCRYPTION_KEYS would give.
	keys, err := demoKeys()
	if err != nil {
		return res, err
	}
	start := time.Now()
	p := producer.New(rdb, producer.Config{Queue: "activations", Keys: keys})
	sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, Batch: "demo"})
	if err != nil {
		return res, fmt.Errorf("enqueue: %w", err)
	}
	res.Enqueued, res.Rejected = sum.Enqueued, sum.Rejected
	fmt.Fprintf(out, "enqueued %d requests from %s (%d rejected)\n", sum.Enqueued, filepath.Base(path), sum.Rejected)

	logger, stopLog := logging.New(o.Log, logging.Options{})
	defer stopLog()
	w, err := worker.New(rdb, worker.Config{
		Queue: "activations", Concurrency: o.Concurrency, PollInterval: 50 * time.Millisecond,
		SweepInterval: time.Second, ShutdownGrace: 5 * time.Second,
		// The stand-in commits a late activation within its LateCommitDelay (300 ms); a real API
		// behind a gateway needs the default's minutes. The in-process Redis cannot restart.
		Policy:              worker.RetryPolicy{SettleTime: time.Second},
		NoRedisRestartGuard: true,
		Versori: versori.Config{BaseURL: "http://" + ln.Addr().String(), HubID: api.HubID(),
			Auth: versori.APIKey(api.APIKey()), Timeout: 5 * time.Second},
		Logger: logger,
		Keys:   keys,
	})
	if err != nil {
		return res, err
	}
	wctx, stopWorker := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()

	store := inspect.New(rdb, producer.Config{Queue: p.Queue()})
	for {
		st := api.Stats()
		dl, err := store.CountDeadLetters(ctx, "")
		if err == nil && int64(st.Activations)+dl >= int64(sum.Enqueued) {
			break
		}
		select {
		case <-ctx.Done():
			stopWorker()
			<-done
			return res, errors.New("demo did not finish in time")
		case <-time.After(100 * time.Millisecond):
		}
	}
	res.Elapsed = time.Since(start)
	res.StandinStats = api.Stats()
	res.Activated = res.StandinStats.Activations
	res.Duplicates = len(api.Duplicates())
	res.APICalls = res.StandinStats.Calls
	if res.DeadLetters, err = store.CountDeadLettersByReason(ctx); err != nil {
		stopWorker()
		<-done
		return res, err
	}
	printResult(out, res)

	err = lifecycle(ctx, out, &res, api, p, store, dir)
	stopWorker()
	if werr := <-done; err == nil {
		err = werr
	}
	if err != nil {
		return res, err
	}
	res.Duplicates = len(api.Duplicates())
	fmt.Fprintln(out, "the dead letters were in the demo's in-process Redis, gone with it; to keep and work them (enqueue dlq list),")
	fmt.Fprintln(out, "run the worker and enqueue file against a real Redis: README.md, \"Running it for real\"")
	return res, nil
}

// lifecycle runs the steps after the first, while the worker runs: onboarding end users the API does
// not know yet, then offboarding part of the sample with a deactivation file.
func lifecycle(ctx context.Context, out io.Writer, res *Result, api *versoritest.Server, p *producer.Producer, insp *inspect.Inspector, dir string) error {
	// From now on the stand-in refuses the activation of an end user it does not know, as the real
	// API does. Each onboarding row carries the endUser its job creates when the activation is
	// refused so (once per user, however many of the user's jobs race), then activates.
	api.RequireKnownUsers(true)
	users := map[string]bool{}
	for line := range bytes.Lines(onboardRows) {
		req, _, err := versori.DecodeRow(line)
		if err != nil {
			return fmt.Errorf("onboard.jsonl: %w", err)
		}
		users[req.UserID] = true
	}
	res.NewUsers = len(users)
	path := filepath.Join(dir, "onboard.jsonl")
	if err := os.WriteFile(path, onboardRows, 0o600); err != nil {
		return err
	}
	before := api.Stats()
	sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, Batch: "demo-onboard"})
	if err != nil {
		return fmt.Errorf("enqueue onboard.jsonl: %w", err)
	}
	fmt.Fprintf(out, "onboarding: enqueued %d requests for %d end users the API does not know yet, from onboard.jsonl (%d rejected)\n",
		sum.Enqueued, len(users), sum.Rejected)
	if res.Onboard, err = waitBatch(ctx, insp, sum.Batch); err != nil {
		return err
	}
	for u := range users {
		if api.HasUser(u) {
			res.UsersCreated++
		}
	}
	fmt.Fprintf(out, "onboarded: %d activated; end users created: %d of %d (each once: %d created twice); jobs that created their end user: %d (an answer 409 \"already exists\" counts)\n",
		res.Onboard.Activated+res.Onboard.AlreadyActive, res.UsersCreated, len(users), api.Stats().UsersCreatedTwice, res.Onboard.CreatedUser)

	// Offboarding: the sample's last rows as they are, as a deactivation file (enqueue deactivate):
	// only each row's pair is used.
	lines := bytes.SplitAfter(bytes.TrimRight(sample, "\n"), []byte("\n"))
	path = filepath.Join(dir, "offboard.jsonl")
	if err := os.WriteFile(path, bytes.Join(lines[len(lines)-offboardRows:], nil), 0o600); err != nil {
		return err
	}
	sum, err = p.EnqueueFile(ctx, producer.FileOptions{Path: path, Batch: "demo-offboard", Op: tasks.OpDeactivate})
	if err != nil {
		return fmt.Errorf("enqueue deactivate offboard.jsonl: %w", err)
	}
	fmt.Fprintf(out, "offboarding: enqueued %d deactivations from offboard.jsonl, the sample's last %d rows as they are (%d rejected)\n",
		sum.Enqueued, offboardRows, sum.Rejected)
	if res.Offboard, err = waitBatch(ctx, insp, sum.Batch); err != nil {
		return err
	}
	res.FinalStats = api.Stats()
	res.FinalActivations = res.FinalStats.Activations
	fmt.Fprintf(out, "offboarded: %d deactivated, %d already inactive (their activation was dead-lettered); activations now: %d\n",
		res.Offboard.Deactivated, res.Offboard.AlreadyInactive, res.FinalActivations)
	fmt.Fprintf(out, "API calls for onboarding and offboarding: %d\n", res.FinalStats.Calls-before.Calls)
	calls := maps.Clone(res.FinalStats.ByOpStatus)
	for k, n := range before.ByOpStatus {
		if calls[k] -= n; calls[k] == 0 {
			delete(calls, k)
		}
	}
	printCalls(out, calls)
	return nil
}

// waitBatch waits until every job of batch id has ended, and returns its counts.
func waitBatch(ctx context.Context, insp *inspect.Inspector, id string) (inspect.BatchStatus, error) {
	for {
		st, err := insp.Batch(ctx, id)
		if err == nil && st.Finished {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("batch %s did not finish in time (%d of %d jobs ended)", id, st.Done, st.Queued)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func printResult(out io.Writer, r Result) {
	fmt.Fprintf(out, "activated: %d (duplicates: %d)\n", r.Activated, r.Duplicates)
	var total int64
	reasons := make([]string, 0, len(r.DeadLetters))
	for reason, n := range r.DeadLetters {
		total += n
		if n > 0 {
			reasons = append(reasons, fmt.Sprintf("%s %d", reason, n))
		}
	}
	sort.Strings(reasons)
	fmt.Fprintf(out, "dead-lettered: %d %v\n", total, reasons)
	fmt.Fprintf(out, "API calls: %d\n", r.APICalls)
	printCalls(out, r.StandinStats.ByOpStatus)
	rate := float64(r.Activated+int(total)) / r.Elapsed.Seconds()
	fmt.Fprintf(out, "elapsed: %s, rate: %.0f jobs/s\n", r.Elapsed.Round(time.Millisecond), rate)
}

// printCalls prints the stand-in's calls by operation, then by status, one line each:
// "  activate 200: 914". Status 0 is a call that got no answer.
func printCalls(out io.Writer, byOpStatus map[string]int) {
	type row struct {
		op     string
		status int
		n      int
	}
	rows := make([]row, 0, len(byOpStatus))
	for k, n := range byOpStatus {
		op, st, _ := strings.Cut(k, " ")
		code, _ := strconv.Atoi(st)
		rows = append(rows, row{op, code, n})
	}
	slices.SortFunc(rows, func(a, b row) int {
		if c := strings.Compare(a.op, b.op); c != 0 {
			return c
		}
		return a.status - b.status
	})
	for _, r := range rows {
		note := ""
		if r.status == 0 {
			note = " (no answer: dropped after commit)"
		}
		fmt.Fprintf(out, "  %s %d: %d%s\n", r.op, r.status, r.n, note)
	}
}

// demoKeys is a keyring of one random key, for the run only.
func demoKeys() (*tasks.Keyring, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	return tasks.ParseKeyring("demo:" + base64.StdEncoding.EncodeToString(raw))
}
