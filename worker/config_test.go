package worker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/versori/activator/internal/configerr"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/worker"
)

// validConfig is DefaultConfig with the two settings it has no default for.
func validConfig() worker.Config {
	c := worker.DefaultConfig()
	c.Versori.Auth, c.Versori.HubID = versori.APIKey("k"), "01J5TANDXN0000000000000HVB"
	return c
}

func TestDefaultConfigIsValid(t *testing.T) {
	t.Parallel()
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig with credentials: %v", err)
	}
	// WithDefaults fills what a zero means "not set" for, and leaves the rest.
	c := worker.Config{Concurrency: 10, Prefetch: worker.PrefetchAuto}.WithDefaults()
	d := worker.DefaultConfig()
	// Zero quick retries means none: WithDefaults keeps it.
	if c.Policy.QuickRetries != 0 {
		t.Errorf("WithDefaults set QuickRetries %d", c.Policy.QuickRetries)
	}
	c.Policy.QuickRetries = d.Policy.QuickRetries
	if c.Queue != d.Queue || c.Servers != 1 || c.ShutdownGrace != d.ShutdownGrace || c.Policy != d.Policy ||
		c.Versori.Timeout != d.Versori.Timeout || c.Breaker.MinCalls != d.Breaker.MinCalls || c.Prefetch != 2 ||
		c.RateWindow != d.RateWindow {
		t.Errorf("WithDefaults = %+v", c)
	}
	if c.MetricsAddr != "" || c.QueueMetrics || c.MaxAge != 0 {
		t.Errorf("WithDefaults turned on what a zero turns off: MetricsAddr %q QueueMetrics %v MaxAge %s", c.MetricsAddr, c.QueueMetrics, c.MaxAge)
	}
}

// TestServersAuto checks how many fetch loops ServersAuto runs for a concurrency, and that an
// explicit count is kept.
func TestServersAuto(t *testing.T) {
	t.Parallel()
	tests := []struct{ concurrency, servers, want int }{
		{1, worker.ServersAuto, 1},
		{25, worker.ServersAuto, 1},
		{26, worker.ServersAuto, 2},
		{50, worker.ServersAuto, 2},
		{100, worker.ServersAuto, 4},
		{500, worker.ServersAuto, worker.MaxAutoServers},
		{2000, worker.ServersAuto, worker.MaxAutoServers},
		{50, 0, 2}, // zero is not set: DefaultConfig's ServersAuto
		{2000, 3, 3},
	}
	for _, tt := range tests {
		c := validConfig()
		c.Concurrency, c.Servers = tt.concurrency, tt.servers
		if err := c.Validate(); err != nil && tt.servers != 0 {
			t.Errorf("concurrency %d servers %d: %v", tt.concurrency, tt.servers, err)
		}
		if got := c.WithDefaults().Servers; got != tt.want {
			t.Errorf("concurrency %d servers %d: %d servers, want %d", tt.concurrency, tt.servers, got, tt.want)
		}
	}
}

func TestConfigValidateNamesFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mod  func(*worker.Config)
		want string
	}{
		{func(c *worker.Config) { c.Concurrency = 0 }, "worker: Concurrency must be at least 1, got 0"},
		{func(c *worker.Config) { c.Servers = 65 }, "worker: Servers must be 1 to 64 (-1: one per 25 of Concurrency), got 65"},
		{func(c *worker.Config) { c.RateWindow = -time.Second }, "worker: RateWindow must not be negative, got -1s"},
		{func(c *worker.Config) { c.Versori.HubID = "" }, "worker: Versori.HubID is required: the worker looks up a user's activations before retrying a call whose outcome is unknown"},
		{func(c *worker.Config) { c.Versori.HubID = "hub1" }, `worker: Versori.HubID "hub1" is not a ULID (26 Crockford base32 characters)`},
		{func(c *worker.Config) { c.Versori.Timeout = 0 }, "worker: Versori.Timeout must be positive, got 0s"},
		{func(c *worker.Config) { c.Policy.Cap = time.Millisecond }, "worker: Policy.Cap must be at least Base (1s), got 1ms"},
		{func(c *worker.Config) { c.Breaker.FailureRatio = 0 }, "worker: Breaker.FailureRatio must be in (0, 1], got 0"},
		{func(c *worker.Config) { c.AdminAddr, c.Pprof = "", true }, "worker: Pprof needs AdminAddr: profiles are served only on the admin listener"},
	}
	for _, tt := range tests {
		c := validConfig()
		tt.mod(&c)
		err := c.Validate()
		var ce *configerr.Error
		if err == nil || err.Error() != tt.want || !errors.As(err, &ce) {
			t.Errorf("Validate = %v, want %q as a *configerr.Error", err, tt.want)
		}
	}
	// A negative duration is no zero: WithDefaults leaves it, and New refuses it.
	c := validConfig()
	c.Policy.Base, c.SweepInterval = -time.Second, -time.Second
	if d := c.WithDefaults(); d.Policy.Base != -time.Second || d.SweepInterval != -time.Second {
		t.Errorf("WithDefaults turned a negative Policy.Base or SweepInterval into %s, %s", d.Policy.Base, d.SweepInterval)
	}
	c.SweepInterval = 0
	if _, err := worker.New(nil, c); err == nil || err.Error() != "worker: Policy.Base must be positive, got -1s" {
		t.Errorf("New(Policy.Base -1s) = %v", err)
	}
	// New gives zero fields their defaults, but Concurrency has none.
	if _, err := worker.New(nil, worker.Config{Versori: versori.Config{Auth: versori.APIKey("k"), HubID: "01J5TANDXN0000000000000HVB"}}); err == nil ||
		err.Error() != "worker: Concurrency must be at least 1, got 0" {
		t.Errorf("New(Concurrency 0) = %v", err)
	}
}
