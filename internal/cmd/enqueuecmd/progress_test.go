package enqueuecmd

import (
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/producer"
)

// at is a summary of a run at elapsed time ms: rows read, rows handled (enqueued), bytes read.
func at(ms, read, done int, bytes int64) producer.Summary {
	return producer.Summary{Elapsed: time.Duration(ms) * time.Millisecond, Rows: read, Enqueued: done, BytesRead: bytes}
}

// secs is a duration of f seconds.
func secs(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// TestMeter drives the progress computations with summaries whose Elapsed is the clock.
func TestMeter(t *testing.T) {
	t.Parallel()
	const sec = time.Second
	tests := []struct {
		name    string
		size    int64
		total   int // -1: not counted (yet)
		samples []producer.Summary
		// of the last reading
		percent int
		byBytes bool
		rate    float64
		eta     time.Duration
	}{
		{
			// The 0%: 32,928 of 50,000 rows read is 65%.
			name: "rows read of the counted total", size: 5_000_000, total: 50_000,
			samples: []producer.Summary{at(1000, 32_928, 22_327, 3_300_000)},
			percent: 65, rate: 22_327, eta: secs((50_000 - 22_327) / 22_327.0),
		},
		{
			// The issue's [1s:1s] at 39% with 2.5 s to go: 20,000 rows/s, 30,500 rows left.
			name: "the ETA is what is left at the current rate", size: 5_000_000, total: 50_000,
			samples: []producer.Summary{at(500, 12_000, 9_500, 0), at(1000, 19_500, 19_500, 0)},
			percent: 39, rate: 19_500, eta: secs(30_500 / 19_500.0),
		},
		{
			// The rate is the last five seconds', not the run's: 10 s at 1,000/s, then 5 s at 10,000/s.
			name: "the rate is recent, not lifetime", size: 10_000_000, total: 100_000,
			samples: []producer.Summary{at(5000, 5_000, 5_000, 0), at(10_000, 10_000, 10_000, 0), at(12_500, 35_000, 35_000, 0), at(15_000, 60_000, 60_000, 0)},
			percent: 60, rate: 10_000, eta: 4 * sec,
		},
		{
			name: "a stalled run has no rate and no ETA", size: 1000, total: 100,
			samples: []producer.Summary{at(1000, 50, 50, 500), at(7000, 50, 50, 500), at(13_000, 50, 50, 500)},
			percent: 50, rate: 0, eta: -1,
		},
		{
			// Before the counter is done: the share of the bytes, and the rows they held so far
			// stand for the total (1,000 rows in 100,000 of 400,000 bytes: 4,000 rows).
			name: "by bytes while the total is unknown", size: 400_000, total: -1,
			samples: []producer.Summary{at(1000, 1_000, 1_000, 100_000)},
			percent: 25, byBytes: true, rate: 1_000, eta: 3 * sec,
		},
		{
			name: "all bytes read is not done", size: 400_000, total: -1,
			samples: []producer.Summary{at(1000, 4_000, 3_000, 400_000)},
			percent: 99, byBytes: true, rate: 3_000, eta: secs(1000 / 3000.0),
		},
		{
			name: "all rows read is not done", size: 400_000, total: 4_000,
			samples: []producer.Summary{at(1000, 4_000, 3_000, 400_000)},
			percent: 99, rate: 3_000, eta: secs(1000 / 3000.0),
		},
		{
			name: "all rows handled is 100%", size: 400_000, total: 4_000,
			samples: []producer.Summary{at(1000, 4_000, 4_000, 400_000)},
			percent: 100, rate: 4_000, eta: 0,
		},
		{
			// Interrupted: the rows read but not sent count as failed at once, which is no progress.
			name: "failed rows are not progress", size: 400_000, total: 4_000,
			samples: []producer.Summary{at(1000, 2_000, 1_000, 200_000), {Elapsed: 2 * sec, Rows: 2_000, Enqueued: 1_000, Failed: 1_000, BytesRead: 200_000}},
			percent: 50, rate: 500, eta: 6 * sec,
		},
		{
			name: "stdin: no size, no total", size: 0, total: -1,
			samples: []producer.Summary{at(2000, 10_000, 8_000, 1<<20)},
			percent: -1, rate: 4_000, eta: -1,
		},
		{
			name: "nothing read yet", size: 1000, total: -1,
			samples: []producer.Summary{at(0, 0, 0, 0)},
			percent: 0, byBytes: true, rate: 0, eta: -1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMeter(tt.size)
			var r reading
			for _, s := range tt.samples {
				r = m.observe(s, tt.total)
			}
			if r.percent != tt.percent || r.byBytes != tt.byBytes {
				t.Errorf("percent %d (by bytes %v), want %d (by bytes %v)", r.percent, r.byBytes, tt.percent, tt.byBytes)
			}
			if d := r.rate - tt.rate; d > 0.5 || d < -0.5 {
				t.Errorf("rate %.1f/s, want %.1f/s", r.rate, tt.rate)
			}
			if d := r.eta - tt.eta; d > time.Millisecond || d < -time.Millisecond {
				t.Errorf("ETA %v, want %v", r.eta, tt.eta)
			}
		})
	}
}

func TestProgressText(t *testing.T) {
	t.Parallel()
	s := producer.Summary{Rows: 32_928, Enqueued: 22_327, Duplicates: 2, Rejected: 1, BytesRead: 3_300_000, Elapsed: 1500 * time.Millisecond}
	counted := reading{rows: 32_928, total: 50_000, percent: 65, rate: 22_327.4, eta: 2500 * time.Millisecond}
	byBytes := reading{rows: 32_928, total: -1, percent: 62, byBytes: true, size: 5 << 20, rate: 22_327.4, eta: 42 * time.Second}
	unknown := reading{rows: 32_928, total: -1, percent: -1, rate: 22_327.4, eta: -1}
	for _, tc := range []struct{ name, got, want string }{
		{"bar, counted", barLine(counted, s), "[=============       ]  65% 32,928/50,000 rows · 22,327 enqueued · 1 rejected · 22,327 rows/s · ETA 2.5s"},
		{"bar, by bytes", barLine(byBytes, s), "[============        ]  62% 32,928 rows (3.1 MiB of 5.0 MiB read) · 22,327 enqueued · 1 rejected · 22,327 rows/s · ETA 42s"},
		{"bar, stdin", barLine(unknown, s), "32,928 rows · 22,327 enqueued · 1 rejected · 22,327 rows/s · ETA ?"},
		{"plain, counted", plainLine(counted, s), "progress: 32928/50000 rows (65%), 22327 enqueued, 2 duplicates, 1 rejected, 22327 rows/s, ETA 2.5s"},
		{"plain, by bytes", plainLine(byBytes, s), "progress: 32928 rows (62% of the bytes), 22327 enqueued, 2 duplicates, 1 rejected, 22327 rows/s, ETA 42s"},
		{"plain, stdin", plainLine(unknown, s), "progress: 32928 rows, 22327 enqueued, 2 duplicates, 1 rejected, 22327 rows/s"},
		{"end, done", endLine(producer.Summary{Rows: 50_000, Enqueued: 50_000, Elapsed: 880 * time.Millisecond}, 50_000, endDone),
			"[====================] 100% 50,000/50,000 rows · 50,000 enqueued · 0 rejected · done in 0.9s"},
		{"end, interrupted", endLine(producer.Summary{Rows: 17_472, Enqueued: 17_405, Failed: 67}, 50_000, endInterrupted),
			"interrupted: 17,472/50,000 rows read · 17,405 enqueued · 0 rejected · 67 not enqueued"},
		{"end, failed, total unknown", endLine(producer.Summary{Rows: 10, Enqueued: 4, Failed: 6}, -1, endFailed),
			"stopped: 10 rows read · 4 enqueued · 0 rejected · 6 not enqueued"},
		{"fit", fit("ab·cdef", 5), "ab·c"},
		{"fit, short", fit("abc", 5), "abc"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, tc.got, tc.want)
		}
	}
	for d, want := range map[time.Duration]string{
		-1: "?", 0: "0.0s", 2500 * time.Millisecond: "2.5s", 42 * time.Second: "42s",
		185 * time.Second: "3m05s", 62*time.Minute + 10*time.Second: "1h02m",
	} {
		if got := etaText(d); got != want {
			t.Errorf("etaText(%v) = %q, want %q", d, got, want)
		}
	}
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 50_000: "50,000", 1_234_567: "1,234,567", -1234: "-1,234"} {
		if got := group(n); got != want {
			t.Errorf("group(%d) = %q, want %q", n, got, want)
		}
	}
	if strings.Contains(endLine(producer.Summary{Rows: 50_000, Failed: 3}, 50_000, endInterrupted), "100%") {
		t.Error("an interrupted run's last line says 100%")
	}
}
