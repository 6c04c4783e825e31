//go:build !linux

package bench

import (
	"os"
	"syscall"
	"time"
)

func childAttr() *syscall.SysProcAttr { return nil }

// maxRSSKB is not measured off Linux, where ru_maxrss units differ.
func maxRSSKB(*os.ProcessState) int64 { return 0 }

func selfCPU() time.Duration { return 0 }

func machineBusy() (time.Duration, bool) { return 0, false }
