// Package window counts events in sliding time windows: how the tests and the bench check, from
// recorded call times, that a rate limit held in every second and not only on average.
package window

import (
	"slices"
	"time"
)

// Max returns the most of times that fall in any half-open window [t, t+w). times need not be
// sorted and is not modified.
func Max(times []time.Time, w time.Duration) int {
	ts := slices.Clone(times)
	slices.SortFunc(ts, time.Time.Compare)
	best, lo := 0, 0
	for hi := range ts {
		for ts[hi].Sub(ts[lo]) >= w {
			lo++
		}
		best = max(best, hi-lo+1)
	}
	return best
}
