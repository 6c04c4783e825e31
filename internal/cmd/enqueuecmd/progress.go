package enqueuecmd

import (
	"fmt"
	"io"
	"os"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/versori/activator/producer"
)

// newProgress returns the progress callback of `enqueue file`: a bar with rate and ETA (by bytes of
// the input) when w is a terminal and the input a regular file, else a plain line per call, which
// logs and CI keep readably. finish ends the bar's line.
func newProgress(w io.Writer, path string) (progress func(producer.Summary), finish func()) {
	line := func(s producer.Summary) {
		fmt.Fprintf(w, "progress: %d rows, %d enqueued, %d duplicates, %d rejected, %.0f rows/s\n",
			s.Rows, s.Enqueued, s.Duplicates, s.Rejected, s.Rate())
	}
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || path == "-" {
		return line, func() {}
	}
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() {
		return line, func() {}
	}
	bar := progressbar.NewOptions64(fi.Size(),
		progressbar.OptionSetWriter(w),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100_000_000),
	)
	return func(s producer.Summary) {
			bar.Describe(fmt.Sprintf("%d rows, %d enqueued, %d rejected, %.0f rows/s", s.Rows, s.Enqueued, s.Rejected, s.Rate()))
			bar.Set64(s.BytesRead)
		}, func() {
			bar.Finish()
			fmt.Fprintln(w)
		}
}
