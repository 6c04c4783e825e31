package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFormat(t *testing.T) {
	t.Parallel()
	main := debug.Module{Path: "github.com/versori/activator", Version: "v1.4.0"}
	for _, tt := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want string
	}{
		{"none", nil, false, "enqueue (no build information)"},
		{"release", &debug.BuildInfo{Main: main, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123abc"}, {Key: "vcs.time", Value: "2026-12-03T10:00:00Z"}, {Key: "vcs.modified", Value: "false"}}},
			true, "enqueue github.com/versori/activator v1.4.0 (revision 0123abc, 2026-12-03T10:00:00Z)"},
		{"modified", &debug.BuildInfo{Main: main, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123abc"}, {Key: "vcs.modified", Value: "true"}}},
			true, "enqueue github.com/versori/activator v1.4.0 (revision 0123abc, modified)"},
		{"no VCS", &debug.BuildInfo{Main: debug.Module{Path: "github.com/versori/activator"}}, true,
			"enqueue github.com/versori/activator (devel) (revision unknown)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := format("enqueue", tt.bi, tt.ok); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}
