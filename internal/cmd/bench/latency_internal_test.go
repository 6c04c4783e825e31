package bench

import (
	"strings"
	"testing"
)

func TestSummarize(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		xs                    []float64
		med, p90, worst, best float64
	}{
		{"ten", []float64{10, 1, 9, 2, 8, 3, 7, 4, 6, 5}, 5.5, 9, 10, 1},
		{"one", []float64{4}, 4, 4, 4, 4},
		{"three", []float64{3, 1, 2}, 2, 3, 3, 1},
		{"none", nil, 0, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			med, p90, worst, best := summarize(tc.xs)
			if med != tc.med || p90 != tc.p90 || worst != tc.worst || best != tc.best {
				t.Errorf("summarize(%v) = %v %v %v %v, want %v %v %v %v", tc.xs, med, p90, worst, best, tc.med, tc.p90, tc.worst, tc.best)
			}
		})
	}
}

func TestLatencyDefaults(t *testing.T) {
	for _, tc := range []struct {
		name  string
		polls []string
		want  string // "" for no error
	}{
		{"default", nil, ""},
		{"durations", []string{"1s", " default", "100ms"}, ""},
		{"not a duration", []string{"fast"}, `"fast" is neither default nor a positive duration`},
		{"zero", []string{"0s"}, `"0s" is neither`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := LatencyConfig{PollIntervals: tc.polls}
			err := c.defaults()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("defaults: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("defaults: %v, want %q", err, tc.want)
			case tc.want == "" && (c.Events != 40 || c.EventGap <= 0 || c.IdleWindow <= 0 || len(c.PollIntervals) == 0):
				t.Errorf("defaults left %+v", c)
			}
		})
	}
}
