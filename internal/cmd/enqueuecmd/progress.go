package enqueuecmd

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/versori/activator/internal/ingest"
	"github.com/versori/activator/producer"
)

// Progress of `enqueue file`. A display shows the rows read of the file's total, the rate over the
// last few seconds and an ETA. The total is counted by a second, cheap read of the file alongside
// the run; until it is known (and on stdin, where it never is) the share of the file's bytes read
// stands in, and the ETA counts on the rows those bytes held so far. On a terminal one line is
// redrawn in place and, before the summary, rewritten with the run's end state (never 100% for a
// run that did not finish); otherwise a plain `progress:` line a second, for logs and CI.

// rateWindow is how far back the rate (and so the ETA) looks: long enough to smooth the
// autopipeliner's bursts, short enough to follow a change of pace within seconds.
const rateWindow = 5 * time.Second

// How often the display is redrawn: on a terminal often enough to look alive; in a log once a second.
const (
	ttyEvery  = 200 * time.Millisecond
	lineEvery = time.Second
)

// sample is how many rows were handled at a time of the run.
type sample struct {
	at   time.Duration
	done int
}

// handled is the rows of s the run is done with: enqueued, skipped or rejected. Rows that failed
// are not: they are still to do (a re-run does them), and counting them would make an interrupted
// run, which fails every row it read at once, look fast.
func handled(s producer.Summary) int {
	return s.Enqueued + s.Duplicates + s.DeadLettered + s.Rejected
}

// meter turns the summaries of a run into readings. Its time is the summaries' Elapsed, so that
// tests set the clock. It is not safe for concurrent use.
type meter struct {
	size    int64 // bytes of the input; 0 when unknown
	window  time.Duration
	samples []sample // oldest first: the last one at or before the window's start, then those within it
}

func newMeter(size int64) *meter {
	return &meter{size: size, window: rateWindow, samples: []sample{{}}}
}

// reading is what a progress display shows at one moment.
type reading struct {
	rows    int // rows read
	total   int // rows of the input; -1 until known
	percent int // of the rows read (of the bytes while the total is unknown), 100 only once all are handled; -1 when unknown
	byBytes bool
	size    int64         // bytes of the input; 0 when unknown
	rate    float64       // rows handled per second over the recent window; 0 until known
	eta     time.Duration // -1 when unknown
}

// observe records s and reads it; total is the input's row count, -1 while unknown.
func (m *meter) observe(s producer.Summary, total int) reading {
	now := sample{at: s.Elapsed, done: handled(s)}
	if last := m.samples[len(m.samples)-1]; now.at > last.at {
		m.samples = append(m.samples, now)
	}
	// Keep one sample at or before the window's start, so that the rate spans the whole window.
	for len(m.samples) > 2 && m.samples[1].at <= now.at-m.window {
		m.samples = m.samples[1:]
	}
	r := reading{rows: s.Rows, total: total, size: m.size, percent: -1, eta: -1}
	if first := m.samples[0]; now.at > first.at {
		r.rate = float64(now.done-first.done) / (now.at - first.at).Seconds()
	}
	// The rows there are in all: counted, or else estimated from the bytes read so far.
	all := -1.0
	switch {
	case total >= 0:
		r.percent = share(int64(s.Rows), int64(total))
		all = float64(total)
	case m.size > 0:
		r.percent, r.byBytes = share(s.BytesRead, m.size), true
		if s.BytesRead > 0 {
			all = float64(s.Rows) * float64(m.size) / float64(s.BytesRead)
		}
	}
	// 100% is for a run that is done: the reader runs ahead of the enqueues, and the total of bytes
	// says nothing of rows still to come.
	if r.percent == 100 && (r.byBytes || now.done < total) {
		r.percent = 99
	}
	if all >= 0 && r.rate > 0 {
		left := max(all-float64(now.done), 0)
		r.eta = time.Duration(left / r.rate * float64(time.Second))
	}
	return r
}

// share is n of all in whole percent, rounded down so that 100% means all of it; 100 when all is 0.
func share(n, all int64) int {
	if all <= 0 {
		return 100
	}
	return int(min(100, n*100/all))
}

// how a run ended, for the display's last line.
type ending int

const (
	endDone        ending = iota // every row was read and handled
	endInterrupted               // a signal stopped it
	endFailed                    // Redis or the input failed
)

// display is the progress output of one `enqueue file` run.
type display struct {
	w       io.Writer
	tty     *os.File // the terminal w is, or nil
	every   time.Duration
	meter   *meter
	countIn func(context.Context) (int, error) // counts the input's rows; nil when it cannot be read twice

	total     atomic.Int64 // rows of the input once counted, else -1
	stopCount context.CancelFunc
	counting  sync.WaitGroup
}

// newDisplay returns the progress display of a run of the input at path (stdin for "-") in format
// f, written to w.
func newDisplay(w io.Writer, stdin io.Reader, path string, f ingest.Format) *display {
	d := &display{w: w, every: lineEvery}
	d.total.Store(-1)
	if file, ok := w.(*os.File); ok && term.IsTerminal(int(file.Fd())) {
		d.tty, d.every = file, ttyEvery
	}
	var size int64
	switch {
	case path == "-":
		// stdin redirected from a file has a size, but cannot be read twice to count its rows.
		if file, ok := stdin.(*os.File); ok {
			if fi, err := file.Stat(); err == nil && fi.Mode().IsRegular() {
				size = fi.Size()
			}
		}
	default:
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
			d.countIn = func(ctx context.Context) (int, error) {
				in, err := os.Open(path)
				if err != nil {
					return 0, fmt.Errorf("counting rows: %w", err)
				}
				defer in.Close()
				return ingest.CountRows(ctx, in, f)
			}
		}
	}
	d.meter = newMeter(size)
	return d
}

// start starts counting the input's rows, beside the run.
func (d *display) start() {
	if d.countIn == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	d.stopCount = cancel
	d.counting.Go(func() {
		if n, err := d.countIn(ctx); err == nil {
			d.total.Store(int64(n))
		}
	})
}

// update shows s, the run's counts so far. It is called from one goroutine at a time, and not
// after finish.
func (d *display) update(s producer.Summary) {
	r := d.meter.observe(s, int(d.total.Load()))
	if d.tty != nil {
		fmt.Fprint(d.w, "\r"+fit(barLine(r, s), d.width())+"\x1b[K")
		return
	}
	fmt.Fprintln(d.w, plainLine(r, s))
}

// finish stops counting and, on a terminal, rewrites the line with the run's end state, so that no
// stale line stays above the summary. s is the run's final summary.
func (d *display) finish(s producer.Summary, end ending) {
	if d.stopCount != nil {
		d.stopCount()
		d.counting.Wait()
	}
	if d.tty == nil {
		return
	}
	total := int(d.total.Load())
	if end == endDone {
		total = s.Rows // every row was read, whether or not the count got there first
	}
	fmt.Fprint(d.w, "\r"+fit(endLine(s, total, end), d.width())+"\x1b[K\n")
}

// width is the terminal's width, 80 when it cannot be told.
func (d *display) width() int {
	if w, _, err := term.GetSize(int(d.tty.Fd())); err == nil && w > 0 {
		return w
	}
	return 80
}

// fit cuts line to fewer runes than the terminal is wide: a line that wraps cannot be redrawn in place.
func fit(line string, width int) string {
	if utf8.RuneCountInString(line) < width {
		return line
	}
	runes := []rune(line)
	return string(runes[:max(width-1, 0)])
}

const barWidth = 20

// bar draws percent as a bar; an unknown percent draws an empty one.
func bar(percent int) string {
	n := 0
	if percent > 0 {
		n = percent * barWidth / 100
	}
	return "[" + strings.Repeat("=", n) + strings.Repeat(" ", barWidth-n) + "]"
}

// barLine is the terminal's line while the run goes on.
func barLine(r reading, s producer.Summary) string {
	var b strings.Builder
	if r.percent >= 0 {
		fmt.Fprintf(&b, "%s %3d%% ", bar(r.percent), r.percent)
	}
	b.WriteString(rowsRead(r, s))
	fmt.Fprintf(&b, " · %s enqueued · %s rejected", group(s.Enqueued), group(s.Rejected))
	if r.rate > 0 {
		fmt.Fprintf(&b, " · %s rows/s", group(int(math.Round(r.rate))))
	}
	b.WriteString(" · ETA " + etaText(r.eta))
	return b.String()
}

// rowsRead is "32,928/50,000 rows", or "32,928 rows (61% of 5.0 MiB)" while the total is unknown.
func rowsRead(r reading, s producer.Summary) string {
	switch {
	case r.total >= 0:
		return group(r.rows) + "/" + group(r.total) + " rows"
	case r.byBytes:
		return fmt.Sprintf("%s rows (%s of %s read)", group(r.rows), mib(s.BytesRead), mib(r.size))
	}
	return group(r.rows) + " rows"
}

// endLine is the terminal's last line, written over the running one before the summary.
func endLine(s producer.Summary, total int, end ending) string {
	read := group(s.Rows) + " rows"
	if total >= 0 {
		read = group(s.Rows) + "/" + group(total) + " rows"
	}
	counts := fmt.Sprintf(" · %s enqueued · %s rejected", group(s.Enqueued), group(s.Rejected))
	switch end {
	case endDone:
		return fmt.Sprintf("%s 100%% %s%s · done in %s", bar(100), read, counts, durationText(s.Elapsed))
	case endInterrupted:
		return fmt.Sprintf("interrupted: %s read%s · %s not enqueued", read, counts, group(s.Failed))
	}
	return fmt.Sprintf("stopped: %s read%s · %s not enqueued", read, counts, group(s.Failed))
}

// plainLine is the line a second written when the output is not a terminal.
func plainLine(r reading, s producer.Summary) string {
	var b strings.Builder
	fmt.Fprintf(&b, "progress: %d", r.rows)
	switch {
	case r.total >= 0:
		fmt.Fprintf(&b, "/%d rows (%d%%)", r.total, r.percent)
	case r.byBytes:
		fmt.Fprintf(&b, " rows (%d%% of the bytes)", r.percent)
	default:
		b.WriteString(" rows")
	}
	fmt.Fprintf(&b, ", %d enqueued, %d duplicates, %d rejected, %.0f rows/s", s.Enqueued, s.Duplicates, s.Rejected, r.rate)
	if r.eta >= 0 {
		b.WriteString(", ETA " + etaText(r.eta))
	}
	return b.String()
}

// etaText is an ETA as a person reads it: "2.5s" under ten seconds, "42s", "3m05s", "1h02m"; "?"
// when unknown.
func etaText(d time.Duration) string {
	if d < 0 {
		return "?"
	}
	return durationText(d)
}

func durationText(d time.Duration) string {
	switch {
	case d < 10*time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + "s"
	case d < time.Minute:
		return strconv.Itoa(int(d.Round(time.Second).Seconds())) + "s"
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	d = d.Round(time.Minute)
	return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
}

// group writes n with thousands separators: 50,000.
func group(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// mib is a byte count in MiB, one decimal.
func mib(n int64) string {
	return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
}
