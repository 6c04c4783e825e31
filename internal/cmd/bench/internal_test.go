package bench

import (
	"testing"
	"time"
)

func TestBusiestSecond(t *testing.T) {
	t0 := time.Unix(1000, 0)
	calls := []standinCall{{At: t0.Add(1500 * time.Millisecond)}, {At: t0}, {At: t0.Add(999 * time.Millisecond)}}
	// The window itself is internal/window's (tested there); this checks the calls' times reach it.
	if got := busiestSecond(calls); got != 2 {
		t.Errorf("busiestSecond = %d, want 2", got)
	}
}

func TestParseMonitorLine(t *testing.T) {
	for _, tc := range []struct{ line, db, src, cmd string }{
		{`+1700000000.123456 [13 127.0.0.1:5555] "EVALSHA" "abc" "1"` + "\r\n", "13", "127.0.0.1:5555", "evalsha"},
		{`+1700000000.123456 [13 lua] "memory" "usage" "k"` + "\r\n", "13", "lua", "memory|usage"},
		{`+1700000000.123456 [2 127.0.0.1:1] "hset" "a\"b" "c"` + "\r\n", "2", "127.0.0.1:1", "hset"},
	} {
		db, src, cmd, ok := parseMonitorLine(tc.line)
		if !ok || db != tc.db || src != tc.src || cmd != tc.cmd {
			t.Errorf("parseMonitorLine(%q) = %q %q %q %v", tc.line, db, src, cmd, ok)
		}
	}
	if _, _, _, ok := parseMonitorLine("+OK\r\n"); ok {
		t.Error("+OK parsed as a command")
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
}

func TestConcurrencyJobs(t *testing.T) {
	for _, tc := range []struct {
		concurrency   int
		latency       time.Duration
		cpuRate, secs int
		want          int
	}{
		{50, 200 * time.Millisecond, 3500, 10, 2500},    // the latency's ceiling, 250/s
		{500, 200 * time.Millisecond, 3500, 10, 25000},  // 2,500/s
		{2000, 200 * time.Millisecond, 3500, 10, 35000}, // the CPU's rate, below 10,000/s
		{50, 0, 3500, 10, 35000},                        // no latency: the CPU's rate
		{1, time.Second, 3500, 10, 100},                 // never under 100 jobs
	} {
		if got := concurrencyJobs(tc.concurrency, tc.latency, tc.cpuRate, tc.secs); got != tc.want {
			t.Errorf("concurrencyJobs(%d, %s, %d, %d) = %d, want %d", tc.concurrency, tc.latency, tc.cpuRate, tc.secs, got, tc.want)
		}
	}
}
