package workercmd

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
)

// TestParseSettingsRefusesRedisPort checks that a REDIS_URL whose port (or missing port) no
// connection can use is refused at start, naming REDIS_URL and the host, instead of a worker that
// waits for a Redis it can never reach.
func TestParseSettingsRefusesRedisPort(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"port above 65535", map[string]string{"REDIS_URL": "redis://127.0.0.1:99999/1"}, nil,
			`REDIS_URL host "127.0.0.1:99999" has port 99999: a port is 1 to 65535`},
		{"port above 65535 with a password", map[string]string{"REDIS_URL": "redis://:" + settingsPassword + "@127.0.0.1:99999/1"}, nil,
			`REDIS_URL host "127.0.0.1:99999" has port 99999: a port is 1 to 65535`},
		{"port 0", map[string]string{"REDIS_URL": "redis://127.0.0.1:0/1"}, nil,
			`REDIS_URL host "127.0.0.1:0" has port 0: a port is 1 to 65535`},
		{"no port", map[string]string{"REDIS_URL": "redis://127.0.0.1/1"}, nil,
			`REDIS_URL host "127.0.0.1" is not host:port (Redis's port is usually 6379)`},
		{"sentinel port", map[string]string{"REDIS_URL": "redis-sentinel://s1:26379,s2:99999?master=m"}, nil,
			`REDIS_URL (redis-sentinel://s1:26379,s2:99999): Sentinel "s2:99999" has port 99999: a port is 1 to 65535`},
		{"cluster port", map[string]string{"REDIS_URL": "redis-cluster://n1:70000"}, nil,
			`REDIS_URL (redis-cluster://n1:70000): node "n1:70000" has port 70000: a port is 1 to 65535`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseSettings(tt.args, settingsEnv(tt.env), io.Discard)
			if err == nil || err.Error() != tt.want {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestBinaryRedisURLBadPort runs the built worker with REDIS_URL=redis://127.0.0.1:99999/1, as the
// operator did: it exits 2 at once with one line naming REDIS_URL, instead of waiting for Redis.
func TestBinaryRedisURLBadPort(t *testing.T) {
	t.Parallel()
	bin := testutil.GoBuild(t, "github.com/versori/activator/cmd/worker")
	for _, url := range []string{"redis://127.0.0.1:99999/1", "redis://127.0.0.1/1"} {
		cmd := exec.Command(bin)
		cmd.Env = []string{
			"PATH=" + os.Getenv("PATH"), "REDIS_URL=" + url, "METRICS_ADDR=",
			"VERSORI_API_KEY=" + settingsAPIKey, "VERSORI_HUB_ID=" + settingsHubID,
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("REDIS_URL=%s: the worker still runs after 10s (waiting for Redis?); stderr:\n%s", url, stderr.String())
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("REDIS_URL=%s: %v, want exit 2", url, err)
		}
		out := stderr.String()
		if !strings.HasPrefix(out, "worker: REDIS_URL host ") || strings.Count(out, "\n") != 1 || stdout.Len() != 0 {
			t.Errorf("REDIS_URL=%s: want one line on stderr naming REDIS_URL and its host, nothing on stdout; stderr:\n%s\nstdout:\n%s", url, out, stdout.String())
		}
	}
}
