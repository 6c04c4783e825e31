package peakrss

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func TestPeakOfThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("VmHWM is read from Linux's /proc")
	}
	kb, ok := Read(os.Getpid())
	if !ok || kb <= 0 {
		t.Fatalf("Read(self) = %d, %v; want a positive peak", kb, ok)
	}
	var p Peak
	exited := make(chan struct{})
	close(exited)
	p.Sample(os.Getpid(), time.Millisecond, exited) // one read, then returns
	if p.KB() < kb {
		t.Errorf("Peak.KB() = %d after a sample, want at least %d", p.KB(), kb)
	}
	if _, ok := Read(-1); ok {
		t.Error("Read(-1) succeeded; want ok false for a process that does not exist")
	}
}
