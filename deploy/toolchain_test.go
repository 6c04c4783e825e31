package deploy_test

// These tests keep the Go toolchain and the base images from drifting: go.mod's go line is the one
// source of truth for the Go release (a patch release, so that a vulnerable standard library cannot
// come back through an older toolchain), and every image the build or the compose stack pulls is
// pinned. They also read the Dockerfile against BuildKit's build checks, which `docker build --check`
// would run but cannot here (it needs a registry). Identifiers here start with tc (toolchain).

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// tcGoRelease returns go.mod's go line, which must name a patch release (1.26.11, not 1.26).
func tcGoRelease(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^go (\S+)\s*$`).FindStringSubmatch(mfReadFile(t, filepath.Join(mfRoot, "go.mod")))
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	if !regexp.MustCompile(`^1\.\d+\.\d+$`).MatchString(m[1]) {
		t.Fatalf("go.mod: go %s, want a patch release such as 1.26.11: the go line picks the toolchain that builds and tests", m[1])
	}
	if regexp.MustCompile(`(?m)^toolchain `).MatchString(mfReadFile(t, filepath.Join(mfRoot, "go.mod"))) {
		t.Error("go.mod has a toolchain line: raise the go line instead (a toolchain line is ignored where GOTOOLCHAIN=local)")
	}
	return m[1]
}

// TestGoToolchainAgrees: the Dockerfile's builder, the Makefile and CI run the release go.mod names.
func TestGoToolchainAgrees(t *testing.T) {
	release := tcGoRelease(t)
	// How the Makefile and .ci/run derive GOTOOLCHAIN from go.mod; a literal go1.N.P also does.
	derived := regexp.QuoteMeta(`go$(sed -n 's/^go //p' go.mod)`)
	makeDerived := regexp.QuoteMeta(`go$(shell sed -n 's/^go //p' go.mod)`)
	literal := regexp.QuoteMeta("go" + release)
	for _, tc := range []struct {
		file, re, want string
	}{
		// golang:1.26.11-bookworm, optionally @sha256:...; golang:1.26-bookworm would float.
		{"deploy/Dockerfile", `(?m)^FROM golang:(\S+?)(?:-[a-z]\S*)?(?:@sha256:[0-9a-f]{64})? AS build$`, release},
		{"Makefile", `(?m)^export GOTOOLCHAIN :?= (` + makeDerived + `|` + literal + `)$`, ""},
		{".ci/run", `(?m)^(?:export )?GOTOOLCHAIN="?(` + derived + `|` + literal + `)"?$`, ""},
		// What a person is told to export or which builder they are told about.
		{"README.md", `GOTOOLCHAIN=go(1\.\d+\.\d+)`, release},
		{"docs/testing.md", `GOTOOLCHAIN=go(1\.\d+\.\d+)`, release},
		{"docs/deployment.md", `golang:(1\.\d+(?:\.\d+)?)`, release},
	} {
		t.Run(tc.file, func(t *testing.T) {
			src := mfReadFile(t, filepath.Join(mfRoot, filepath.FromSlash(tc.file)))
			all := regexp.MustCompile(tc.re).FindAllStringSubmatch(src, -1)
			if all == nil {
				t.Errorf("%s does not name Go %s (go.mod's go line) as %s; want it to", tc.file, release, tc.re)
			}
			for _, m := range all {
				if tc.want != "" && m[1] != tc.want {
					t.Errorf("%s names Go %s (%s), go.mod says %s", tc.file, m[1], m[0], tc.want)
				}
			}
			if tc.file == ".ci/run" && !regexp.MustCompile(`(?m)^export GOTOOLCHAIN\b`).MatchString(src) {
				t.Errorf(".ci/run sets GOTOOLCHAIN but does not export it")
			}
		})
	}
}

// tcNoDigest lists the images that are pinned by an exact version only, because no digest for that
// tag could be looked up where they were pinned (no registry was reachable). Pin each by digest
// (`docker buildx imagetools inspect IMAGE`) and drop it from here.
var tcNoDigest = map[string]bool{
	"golang:1.26.11-bookworm": true,
	"prom/prometheus:v3.5.0":  true,
	"grafana/grafana:12.1.0":  true,
}

// TestImagesPinned: every image the Dockerfile or the compose stack pulls, and the Dockerfile's syntax
// frontend, is pinned by digest (or, where listed in tcNoDigest, by an exact version), so that a
// rebuild gets the same bytes.
func TestImagesPinned(t *testing.T) {
	var refs []string
	df := mfReadFile(t, "Dockerfile")
	if m := regexp.MustCompile(`(?m)^# syntax=(\S+)`).FindStringSubmatch(df); m != nil {
		refs = append(refs, m[1])
	}
	for _, m := range regexp.MustCompile(`(?m)^FROM (?:--platform=\S+ )?(\S+)`).FindAllStringSubmatch(df, -1) {
		refs = append(refs, m[1])
	}
	cf := mfLoadCompose(t)
	for _, s := range cf.Services {
		if s.Build == nil && s.Image != "" {
			refs = append(refs, s.Image)
		}
	}
	if len(refs) < 4 {
		t.Fatalf("found only %v: the Dockerfile's two stages, its syntax line and compose's redis at least", refs)
	}
	digest := regexp.MustCompile(`^[^@\s]+:[^@:/\s]+@sha256:[0-9a-f]{64}$`)
	exact := regexp.MustCompile(`:v?\d+\.\d+\.\d+(?:-[a-z0-9.]+)?$`)
	for _, ref := range refs {
		switch name, _, _ := strings.Cut(ref, "@"); {
		case digest.MatchString(ref):
			if tcNoDigest[name] {
				t.Errorf("%s has a digest now: drop it from tcNoDigest", name)
			}
		case tcNoDigest[ref] && exact.MatchString(ref):
		default:
			t.Errorf("image %s is not pinned: want NAME:TAG@sha256:DIGEST with the version in a comment (or, with no digest to be had, an exact version listed in tcNoDigest)", ref)
		}
	}
}

// TestDockerfileCacheMounts: go mod download and go build keep the module and build caches in BuildKit
// cache mounts, so that a rebuild after a source change recompiles only what changed.
func TestDockerfileCacheMounts(t *testing.T) {
	// The golang image's GOPATH is /go and HOME is /root.
	const modCache, buildCache = "target=/go/pkg/mod", "target=/root/.cache/go-build"
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{"go mod download", []string{modCache}},
		{"go build", []string{modCache, buildCache}},
	} {
		found := false
		for _, in := range mfParseDockerfile(t, "Dockerfile").stages[0].instrs {
			if in.cmd != "RUN" || !strings.Contains(in.args, tc.cmd) {
				continue
			}
			found = true
			var mounts []string
			for _, w := range strings.Fields(in.args) {
				if strings.HasPrefix(w, "--mount=") && strings.Contains(w, "type=cache") {
					mounts = append(mounts, w)
				}
			}
			for _, w := range tc.want {
				if !slices.ContainsFunc(mounts, func(m string) bool { return strings.Contains(m, w) }) {
					t.Errorf("RUN %s: no --mount=type=cache,%s (mounts: %v)", tc.cmd, w, mounts)
				}
			}
		}
		if !found {
			t.Errorf("the build stage has no RUN %s", tc.cmd)
		}
	}
}

// TestDockerfileBuildChecks reads the Dockerfile against the BuildKit build checks that apply to it
// (https://docs.docker.com/reference/build-checks/), since `docker build --check` cannot run here.
func TestDockerfileBuildChecks(t *testing.T) {
	lines := strings.Split(mfReadFile(t, "Dockerfile"), "\n")
	type instr struct {
		line      int
		keyword   string // as written
		args      string // continuation lines joined
		emptyCont bool   // an empty line inside its continuation
	}
	var instrs []instr
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		in := instr{line: i + 1}
		in.keyword, in.args, _ = strings.Cut(l, " ")
		for strings.HasSuffix(in.args, `\`) && i+1 < len(lines) {
			in.args = strings.TrimSuffix(in.args, `\`)
			i++
			next := strings.TrimSpace(lines[i])
			if next == "" {
				in.emptyCont = true
			}
			if !strings.HasPrefix(next, "#") {
				in.args += " " + next
			}
		}
		instrs = append(instrs, in)
	}

	stages := map[string]bool{}
	once := map[string]int{} // CMD, ENTRYPOINT, HEALTHCHECK per stage
	errorf := func(in instr, rule, format string, args ...any) {
		t.Errorf("Dockerfile:%d: %s: %s", in.line, rule, fmt.Sprintf(format, args...))
	}
	for _, in := range instrs {
		kw := strings.ToUpper(in.keyword)
		if in.keyword != kw {
			errorf(in, "ConsistentInstructionCasing", "%s, want %s", in.keyword, kw)
		}
		if in.emptyCont {
			errorf(in, "NoEmptyContinuation", "an empty line inside a continued %s", kw)
		}
		switch kw {
		case "FROM":
			once = map[string]int{}
			f := strings.Fields(in.args)
			if len(f) >= 3 && strings.EqualFold(f[len(f)-2], "AS") {
				name := f[len(f)-1]
				if f[len(f)-2] != "AS" {
					errorf(in, "FromAsCasing", "%s, want AS with an upper-case FROM", f[len(f)-2])
				}
				if name != strings.ToLower(name) {
					errorf(in, "StageNameCasing", "stage %s, want lower case", name)
				}
				if name == "scratch" || name == "context" {
					errorf(in, "ReservedStageName", "stage %s", name)
				}
				if stages[name] {
					errorf(in, "DuplicateStageName", "stage %s", name)
				}
				stages[name] = true
			}
		case "CMD", "ENTRYPOINT":
			if !strings.HasPrefix(strings.TrimSpace(in.args), "[") {
				errorf(in, "JSONArgsRecommended", "%s %s: want the JSON form, so that signals reach the process", kw, in.args)
			}
			fallthrough
		case "HEALTHCHECK":
			if once[kw]++; once[kw] > 1 {
				errorf(in, "MultipleInstructionsDisallowed", "more than one %s in a stage", kw)
			}
		case "MAINTAINER":
			errorf(in, "MaintainerDeprecated", "use a LABEL")
		case "WORKDIR":
			if !strings.HasPrefix(in.args, "/") && !strings.HasPrefix(in.args, "$") {
				errorf(in, "WorkdirRelativePath", "WORKDIR %s", in.args)
			}
		case "ENV", "LABEL":
			if f := strings.Fields(in.args); len(f) > 0 && !strings.Contains(f[0], "=") {
				errorf(in, "LegacyKeyValueFormat", "%s %s: want key=value", kw, in.args)
			}
		case "ARG":
			name, _, _ := strings.Cut(in.args, "=")
			if regexp.MustCompile(`(?i)secret|passw|token|api_?key|private`).MatchString(name) {
				errorf(in, "SecretsUsedInArgOrEnv", "ARG %s", name)
			}
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				if !regexp.MustCompile(`^\d+(?:-\d+)?(?:/(?:tcp|udp))?$`).MatchString(p) {
					errorf(in, "ExposeInvalidFormat/ExposeProtoCasing", "EXPOSE %s: want PORT[/tcp|udp], lower case, no address", p)
				}
			}
		}
	}
	if len(stages) == 0 {
		t.Error("no named stage: the test read nothing")
	}
}
