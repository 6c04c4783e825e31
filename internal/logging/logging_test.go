package logging_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/logging"
	"github.com/versori/activator/internal/testutil"
)

// lines decodes out's lines, each of which must be a JSON object.
func lines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for l := range strings.SplitSeq(strings.TrimSuffix(out, "\n"), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line is not JSON: %q (%v)\nall:\n%s", l, err, out)
		}
		recs = append(recs, m)
	}
	return recs
}

func TestParseFormat(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]logging.Format{"json": logging.JSON, "TEXT": logging.Text, " text ": logging.Text} {
		if got, err := logging.ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "logfmt", "jsonl"} {
		if _, err := logging.ParseFormat(in); err == nil {
			t.Errorf("ParseFormat(%q) succeeded", in)
		}
	}
}

func TestNewFormats(t *testing.T) {
	t.Parallel()
	var js, txt bytes.Buffer
	l, stop := logging.New(&js, logging.Options{})
	l.Info("hello", "n", 1)
	l.Debug("hidden")
	stop()
	if recs := lines(t, js.String()); len(recs) != 1 || recs[0]["msg"] != "hello" || recs[0]["n"] != 1.0 {
		t.Errorf("JSON log = %q", js.String())
	}
	l, stop = logging.New(&txt, logging.Options{Format: logging.Text, Level: slog.LevelDebug, Flush: time.Hour})
	l.Debug("shown", "n", 2)
	stop() // writes the batched line
	if got := txt.String(); !strings.Contains(got, "level=DEBUG msg=shown n=2") {
		t.Errorf("text log = %q", got)
	}
}

// TestRepeatsCollapse checks that a warning repeated word for word is written once, and its count
// when the interval ends (here: at Stop); different attributes, other loggers and info lines are
// not collapsed.
func TestRepeatsCollapse(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	l, stop := logging.New(&out, logging.Options{Repeat: time.Hour})
	for range 5 {
		l.Warn("dial failed", "error", "connection refused")
	}
	l.Warn("dial failed", "error", "i/o timeout")
	l.With("source", "asynq").Warn("dial failed", "error", "connection refused")
	l.Info("job done", "task", "a")
	l.Info("job done", "task", "a")
	if recs := lines(t, out.String()); len(recs) != 5 {
		t.Fatalf("before the interval ends: %d lines, want 5 (each distinct once, both info lines):\n%s", len(recs), out.String())
	}
	stop()
	recs := lines(t, out.String())
	if len(recs) != 6 {
		t.Fatalf("after stop: %d lines, want 6:\n%s", len(recs), out.String())
	}
	last := recs[5]
	if last["msg"] != "dial failed" || last["error"] != "connection refused" || last["repeated"] != 4.0 || last["source"] != nil {
		t.Errorf("count line = %v, want the repeated warning with repeated=4", last)
	}
	l.Warn("after stop")
	l.Warn("after stop")
	if recs := lines(t, out.String()); len(recs) != 8 {
		t.Errorf("after stop, lines are written every time:\n%s", out.String())
	}
}

// TestRepeatsInterval checks that a count is written when its interval ends, and that the interval
// goes on while the record keeps coming: one line per interval, not one per record.
func TestRepeatsInterval(t *testing.T) {
	t.Parallel()
	var out testutil.SyncBuffer
	l, stop := logging.New(&out, logging.Options{Repeat: 20 * time.Millisecond})
	defer stop()
	l.Error("refused")
	l.Error("refused")
	l.Error("refused")
	testutil.WaitFor(t, 5*time.Second, "the count line", func() bool { return strings.Count(out.String(), "\n") == 2 })
	recs := lines(t, out.String())
	if recs[1]["repeated"] != 2.0 || recs[0]["repeated"] != nil {
		t.Errorf("lines = %v, want the record, then its count 2", recs)
	}
}

// TestInstall checks that go-redis's logger and the standard log package write through the
// process's logger, as JSON, and that go-redis's refused dials, many a second, come out as one line
// and its count. It sets process-global loggers, so it is the only test here that does.
func TestInstall(t *testing.T) {
	var out testutil.SyncBuffer
	l, stop := logging.New(&out, logging.Options{Repeat: time.Hour})
	logging.Install(l)
	defer func() {
		logging.Install(slog.New(slog.DiscardHandler))
		log.SetOutput(&bytes.Buffer{})
	}()
	log.Printf("Failed to collect metrics data: %s", "boom")
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t)), MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	for range 3 {
		_ = rdb.Ping(context.Background()).Err()
	}
	stop()
	recs := lines(t, out.String())
	var std, dial []map[string]any
	for _, r := range recs {
		switch r["source"] {
		case "log":
			std = append(std, r)
		case "go-redis":
			dial = append(dial, r)
		}
	}
	if len(std) != 1 || std[0]["msg"] != "Failed to collect metrics data: boom" || std[0]["level"] != "WARN" {
		t.Errorf("standard log lines = %v", std)
	}
	if len(dial) != 2 || !strings.Contains(dial[0]["msg"].(string), "connection refused") || strings.HasPrefix(dial[0]["msg"].(string), "redis: ") ||
		dial[1]["repeated"] == nil {
		t.Errorf("go-redis lines = %v, want its refused dial once, then its count\n%s", dial, out.String())
	}
}
