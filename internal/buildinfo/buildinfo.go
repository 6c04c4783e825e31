// Package buildinfo says which build of activator a program is, for its --version: the module's
// version and the VCS revision the go command stamped into the binary.
package buildinfo

import (
	"runtime/debug"
	"strings"
)

// Version is the one line a program's --version prints: program, module path and version, then the
// VCS revision, its time and whether the work tree had changes, as far as the build recorded them.
func Version(program string) string {
	bi, ok := debug.ReadBuildInfo()
	return format(program, bi, ok)
}

// format is Version from a build's info (ok false: none recorded).
func format(program string, bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return program + " (no build information)"
	}
	version := bi.Main.Version
	if version == "" {
		version = "(devel)"
	}
	line := program + " " + bi.Main.Path + " " + version
	var rev, at string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" {
		return line + " (revision unknown)"
	}
	parts := []string{"revision " + rev}
	if at != "" {
		parts = append(parts, at)
	}
	if modified {
		parts = append(parts, "modified")
	}
	return line + " (" + strings.Join(parts, ", ") + ")"
}
