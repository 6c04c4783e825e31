package workercmd

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
)

// The secrets of issue 15's report, which /debug/pprof/cmdline showed.
const (
	leakPassword = "r3disPassw0rd"
	leakAPIKey   = "SUPERSECRETAPIKEY123"
)

// get answers a GET of url: its status and body, or 0 and the error's text when nothing answers.
func get(url string) (int, string) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBinarySecretsNeverOnTheCommandLine runs the built worker with the profiler and the queue UI on
// and its secrets (a Redis password and an API key) in the environment, then in *_FILE files:
// /debug/pprof/cmdline, served on ADMIN_ADDR only, carries none, nor does the process's argv;
// METRICS_ADDR serves metrics and probes and answers 404 for the profiler and the UI. The old flags
// are refused in one line that does not show the value, and so is a secret set both ways.
func TestBinarySecretsNeverOnTheCommandLine(t *testing.T) {
	t.Parallel()
	srv := testutil.StartRedisServer(t, false)
	ctx := context.Background()
	if err := srv.Client.ConfigSet(ctx, "requirepass", leakPassword).Err(); err != nil {
		t.Fatal(err)
	}
	redisURL := "redis://:" + leakPassword + "@" + srv.Addr() + "/0"
	dir := t.TempDir()
	urlFile, keyFile := filepath.Join(dir, "redis-url"), filepath.Join(dir, "api-key")
	for p, v := range map[string]string{urlFile: redisURL + "\n", keyFile: leakAPIKey + "\n"} {
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{"VERSORI_HUB_ID=" + settingsHubID, "VERSORI_BASE_URL=http://127.0.0.1:1", "SHUTDOWN_GRACE=1s",
		"PPROF=true", "ADMIN_UI=true"}

	for _, tc := range []struct {
		name    string
		secrets []string
	}{
		{"variables", []string{"REDIS_URL=" + redisURL, "VERSORI_API_KEY=" + leakAPIKey}},
		{"files", []string{"REDIS_URL_FILE=" + urlFile, "VERSORI_API_KEY_FILE=" + keyFile}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			metricsAddr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
			adminAddr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
			env := append(append(slices.Clone(base), tc.secrets...), "METRICS_ADDR="+metricsAddr, "ADMIN_ADDR="+adminAddr)
			p := startWorker(t, env)
			testutil.WaitFor(t, 30*time.Second, "the worker ready", func() bool {
				code, _ := get("http://" + metricsAddr + "/readyz")
				return code == http.StatusOK
			})

			code, cmdline := get("http://" + adminAddr + "/debug/pprof/cmdline")
			if code != http.StatusOK || cmdline == "" {
				t.Fatalf("GET ADMIN_ADDR/debug/pprof/cmdline = %d %q, want 200 and the command line", code, cmdline)
			}
			argv, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/cmdline")
			if err != nil {
				t.Fatal(err)
			}
			for what, text := range map[string]string{"/debug/pprof/cmdline": cmdline, "argv": string(argv)} {
				for _, secret := range []string{leakPassword, leakAPIKey} {
					if strings.Contains(text, secret) {
						t.Errorf("%s carries a secret: %q", what, text)
					}
				}
			}

			for _, c := range []struct {
				addr, path string
				want       int
			}{
				{adminAddr, "/debug/pprof/", http.StatusOK},
				{adminAddr, "/ui/", http.StatusOK},
				{adminAddr, "/metrics", http.StatusNotFound},
				{metricsAddr, "/metrics", http.StatusOK},
				{metricsAddr, "/healthz", http.StatusOK},
				{metricsAddr, "/debug/pprof/", http.StatusNotFound},
				{metricsAddr, "/debug/pprof/cmdline", http.StatusNotFound},
				{metricsAddr, "/ui/", http.StatusNotFound},
				{metricsAddr, "/ui/api/queues", http.StatusNotFound},
			} {
				if code, body := get("http://" + c.addr + c.path); code != c.want {
					t.Errorf("GET %s%s = %d %.200q, want %d", c.addr, c.path, code, body, c.want)
				}
			}
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			if code := p.wait(t); code != 0 {
				t.Errorf("exit %d after SIGTERM, want 0; stderr:\n%s", code, p.stderr)
			}
			for _, secret := range []string{leakPassword, leakAPIKey} {
				if strings.Contains(p.stderr.String(), secret) {
					t.Errorf("the log carries a secret:\n%s", p.stderr)
				}
			}
		})
	}

	// Refused at start: exit 2 and one line, without the value.
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"-redis-url", []string{"VERSORI_API_KEY=" + leakAPIKey}, []string{"-redis-url", redisURL},
			"worker: -redis-url is not accepted: a secret on the command line shows in ps and /debug/pprof/cmdline; set REDIS_URL, or REDIS_URL_FILE to a file holding it, instead\n"},
		{"-versori-api-key=", []string{"REDIS_URL=" + redisURL}, []string{"-concurrency=2", "-versori-api-key=" + leakAPIKey},
			"worker: -versori-api-key is not accepted: a secret on the command line shows in ps and /debug/pprof/cmdline; set VERSORI_API_KEY, or VERSORI_API_KEY_FILE to a file holding it, instead\n"},
		{"both REDIS_URL and REDIS_URL_FILE", []string{"REDIS_URL=" + redisURL, "REDIS_URL_FILE=" + urlFile, "VERSORI_API_KEY=" + leakAPIKey}, nil,
			"worker: REDIS_URL and REDIS_URL_FILE are both set: set one of them\n"},
		{"both VERSORI_API_KEY and its file", []string{"REDIS_URL=" + redisURL, "VERSORI_API_KEY=" + leakAPIKey, "VERSORI_API_KEY_FILE=" + keyFile}, nil,
			"worker: VERSORI_API_KEY and VERSORI_API_KEY_FILE are both set: set one of them\n"},
		{"unreadable file", []string{"REDIS_URL_FILE=" + filepath.Join(dir, "nope"), "VERSORI_API_KEY=" + leakAPIKey}, nil,
			"worker: REDIS_URL_FILE: cannot read it: open " + filepath.Join(dir, "nope") + ": no such file or directory\n"},
	} {
		t.Run("refused "+tc.name, func(t *testing.T) {
			env := append(slices.Clone(base), tc.env...)
			env = append(env, "METRICS_ADDR=", "ADMIN_ADDR=127.0.0.1:"+strconv.Itoa(testutil.FreePort(t)))
			p := startWorker(t, env, tc.args...)
			if code := p.wait(t); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if out := p.stderr.String(); out != tc.want {
				t.Errorf("stderr = %q, want %q", out, tc.want)
			}
		})
	}
}
