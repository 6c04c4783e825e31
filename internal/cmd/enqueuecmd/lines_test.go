package enqueuecmd

import "testing"

func TestLineList(t *testing.T) {
	t.Parallel()
	tests := []struct {
		lines []int
		n     int
		want  string
	}{
		{[]int{9, 3, 5}, 3, "lines 3,5,9"},
		{[]int{40, 2}, 120, "lines 2,40 and 118 more"},
	}
	for _, tt := range tests {
		if got := lineList(tt.lines, tt.n); got != tt.want {
			t.Errorf("lineList(%v, %d) = %q, want %q", tt.lines, tt.n, got, tt.want)
		}
	}
}
