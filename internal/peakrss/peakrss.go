// Package peakrss measures a child process's peak resident set while it runs, from VmHWM in
// /proc/PID/status. ru_maxrss, which the exit status carries, is no use for this: Linux carries the
// forking parent's peak into the child's across exec, so every child of a large test or bench process
// looked at least as large as its parent.
package peakrss

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Read returns a running process's peak RSS in KiB; ok is false when it cannot be read (the process
// has gone, or there is no /proc).
func Read(pid int) (kb int64, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, found := strings.CutPrefix(line, "VmHWM:"); found {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// Peak is the largest peak RSS a Sample read. The zero value is ready to use.
type Peak struct{ kb atomic.Int64 }

// Sample reads pid's peak RSS every interval until exited is closed. The peak can only be read while
// the process exists, and it only grows, so the last read is at most one interval old.
func (p *Peak) Sample(pid int, every time.Duration, exited <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if kb, ok := Read(pid); ok {
			p.kb.Store(max(p.kb.Load(), kb))
		}
		select {
		case <-exited:
			return
		case <-t.C:
		}
	}
}

// KB is the peak in KiB; 0 when none was read.
func (p *Peak) KB() int64 { return p.kb.Load() }
