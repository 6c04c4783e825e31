package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/versori/activator/internal/peakrss"
)

// binaries are the real programs a run starts, built once per run.
type binaries struct {
	worker, standin, enqueue string
}

// buildBinaries builds cmd/worker, cmd/versori-standin and cmd/enqueue into dir with the go tool: from
// the module that holds the working directory (or moduleDir when set), as it is on disk, or, when
// gitRef is set, from that commit's files exactly (git archive), whatever is being edited meanwhile.
// It returns the binaries and a description of the source they were built from.
func buildBinaries(ctx context.Context, dir, moduleDir, gitRef string) (binaries, string, error) {
	goTool := "go"
	if g := os.Getenv("GO"); g != "" {
		goTool = g
	}
	if moduleDir == "" {
		out, err := exec.CommandContext(ctx, goTool, "env", "GOMOD").Output()
		if err != nil {
			return binaries{}, "", fmt.Errorf("go env GOMOD: %w", err)
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			return binaries{}, "", errors.New("run the bench inside the activator module (or pass -module-dir)")
		}
		moduleDir = filepath.Dir(gomod)
	}
	git := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", moduleDir}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	src, source := moduleDir, ""
	if gitRef != "" {
		sha, err := git("rev-parse", "--verify", gitRef+"^{commit}")
		if err != nil {
			return binaries{}, "", fmt.Errorf("-git-ref %s: not a commit: %w", gitRef, err)
		}
		src = filepath.Join(dir, "src")
		tarball := filepath.Join(dir, "src.tar")
		if _, err := git("archive", "--format=tar", "-o", tarball, sha); err != nil {
			return binaries{}, "", fmt.Errorf("git archive %s: %w", sha, err)
		}
		if err := os.MkdirAll(src, 0o755); err != nil {
			return binaries{}, "", err
		}
		if out, err := exec.CommandContext(ctx, "tar", "-xf", tarball, "-C", src).CombinedOutput(); err != nil {
			return binaries{}, "", fmt.Errorf("tar: %w\n%s", err, out)
		}
		source = "git " + sha[:12] + " (" + gitRef + ", committed files only)"
	} else if sha, err := git("rev-parse", "--short=12", "HEAD"); err == nil {
		source = "working tree at git " + sha
		if st, err := git("status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
			var files []string
			for line := range strings.SplitSeq(st, "\n") {
				files = append(files, strings.TrimSpace(line))
			}
			source += ", modified: " + strings.Join(files, ", ")
		}
	} else {
		source = "working tree (not a git checkout)"
	}
	cmd := exec.CommandContext(ctx, goTool, "build", "-o", dir+string(filepath.Separator),
		"./cmd/worker", "./cmd/versori-standin", "./cmd/enqueue")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		return binaries{}, "", fmt.Errorf("go build: %w\n%s", err, out)
	}
	return binaries{
		worker:  filepath.Join(dir, "worker"),
		standin: filepath.Join(dir, "versori-standin"),
		enqueue: filepath.Join(dir, "enqueue"),
	}, source, nil
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// proc is a child process whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error        // of Wait, once done is closed
	peak peakrss.Peak // read while it runs
}

// startProc starts bin with args; env is added to the bench's own environment (later entries win).
func startProc(logDir, name string, env []string, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	go p.peak.Sample(cmd.Process.Pid, 50*time.Millisecond, p.done)
	return p, nil
}

// stop sends SIGTERM and waits up to grace for the process to exit, then kills it.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.exitErr()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, grace)
	}
	return p.exitErr()
}

func (p *proc) exitErr() error {
	if p.err != nil {
		return fmt.Errorf("%s: %w (log: %s)%s", p.name, p.err, p.log, p.tail())
	}
	return nil
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil || len(b) == 0 {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return "\n" + string(b)
}

// maxRSSKB is the process's peak resident set in KiB, once it has exited: its VmHWM as last read,
// or else the exit status's ru_maxrss (which can be the bench's own, see package peakrss).
func (p *proc) maxRSSKB() int64 {
	if kb := p.peak.KB(); kb > 0 {
		return kb
	}
	if p.cmd.ProcessState == nil {
		return 0
	}
	return maxRSSKB(p.cmd.ProcessState)
}

// standin is a running versori-standin process.
type standin struct {
	*proc
	url string
}

func startStandin(bin, logDir, name string, latency time.Duration) (*standin, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, err := startProc(logDir, name, nil, bin, "-addr", addr, "-latency", latency.String(), "-max-calls", "0")
	if err != nil {
		return nil, err
	}
	s := &standin{proc: p, url: "http://" + addr}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := s.stats(); err == nil {
			return s, nil
		}
		if p.exited() || time.Now().After(deadline) {
			_ = p.stop(time.Second)
			return nil, fmt.Errorf("the stand-in did not answer on %s (log: %s)%s", addr, p.log, p.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// standinStats is what /_standin/stats answers (versoritest.Stats).
type standinStats struct {
	Calls       int            `json:"calls"`
	ByOpStatus  map[string]int `json:"byOpStatus"`
	Activations int            `json:"activations"`
	Duplicates  int            `json:"duplicates"`
	Dropped     int            `json:"dropped"`
}

// standinCall is the part of a /_standin/calls entry the bench reads.
type standinCall struct {
	At time.Time `json:"at"`
	Op string    `json:"op"`
}

var adminClient = &http.Client{Timeout: 30 * time.Second}

func (s *standin) get(path string, v any) error {
	resp, err := adminClient.Get(s.url + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(b))
	}
	return json.Unmarshal(b, v)
}

func (s *standin) stats() (standinStats, error) {
	var st standinStats
	err := s.get("/_standin/stats", &st)
	return st, err
}

func (s *standin) calls() ([]standinCall, error) {
	var cs []standinCall
	err := s.get("/_standin/calls", &cs)
	return cs, err
}

// scrapeMetrics reads the samples of a Prometheus text exposition whose names start with prefix,
// keyed by the line's name and labels as written.
func scrapeMetrics(addr, prefix string) (map[string]float64, error) {
	resp, err := adminClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, nil
}
