package window_test

import (
	"testing"
	"time"

	"github.com/versori/activator/internal/window"
)

func TestMax(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	at := func(ms ...int) []time.Time {
		ts := make([]time.Time, len(ms))
		for i, m := range ms {
			ts[i] = t0.Add(time.Duration(m) * time.Millisecond)
		}
		return ts
	}
	tests := []struct {
		name  string
		times []time.Time
		want  int
	}{
		{"none", nil, 0},
		{"one", at(5), 1},
		// [100ms, 1.1s) holds 100, 999, 1000, 1001; [0, 1s) holds 0, 100, 999.
		{"sliding, end exclusive", at(0, 100, 999, 1000, 1001, 1500, 3000), 4},
		{"unsorted", at(1001, 3000, 0, 1000, 100, 1500, 999), 4},
		{"same instant", at(7, 7, 7), 3},
		{"exactly a window apart", at(0, 1000, 2000), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]time.Time(nil), tt.times...)
			if got := window.Max(tt.times, time.Second); got != tt.want {
				t.Errorf("Max = %d, want %d", got, tt.want)
			}
			for i := range in {
				if !in[i].Equal(tt.times[i]) {
					t.Fatal("Max reordered its input")
				}
			}
		})
	}
}
