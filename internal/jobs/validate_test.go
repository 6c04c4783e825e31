package jobs

import (
	"errors"
	"testing"
	"time"

	"github.com/versori/activator/internal/configerr"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	with := func(mod func(*Config)) Config {
		c := DefaultConfig()
		mod(&c)
		return c
	}
	tests := []struct {
		name  string
		cfg   Config
		field string // "" for valid
		want  string
	}{
		{"defaults", DefaultConfig(), "", ""},
		{"least", Config{Queue: "q", MaxRetry: 1, Retention: time.Nanosecond, Timeout: time.Second}, "", ""},
		{"empty queue", with(func(c *Config) { c.Queue = " " }), "Queue", "producer: Queue must not be empty"},
		{"max retry 0", with(func(c *Config) { c.MaxRetry = 0 }), "MaxRetry", "producer: MaxRetry must be at least 1, got 0"},
		{"max retry negative", with(func(c *Config) { c.MaxRetry = -1 }), "MaxRetry", "producer: MaxRetry must be at least 1, got -1"},
		{"retention 0", with(func(c *Config) { c.Retention = 0 }), "Retention", "producer: Retention must be positive, got 0s"},
		{"retention negative", with(func(c *Config) { c.Retention = -time.Hour }), "Retention", "producer: Retention must be positive, got -1h0m0s"},
		{"timeout 0", with(func(c *Config) { c.Timeout = 0 }), "Timeout", "producer: Timeout must be at least 1s, got 0s"},
		{"timeout negative", with(func(c *Config) { c.Timeout = -time.Second }), "Timeout", "producer: Timeout must be at least 1s, got -1s"},
		{"timeout under a second", with(func(c *Config) { c.Timeout = 500 * time.Millisecond }), "Timeout", "producer: Timeout must be at least 1s, got 500ms"},
		{"timeout not whole seconds", with(func(c *Config) { c.Timeout = 1500 * time.Millisecond }), "Timeout",
			"producer: Timeout must be whole seconds (a job's timeout is kept in seconds), got 1.5s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			checkValidate(t, tt.cfg.Validate(), tt.field, tt.want)
		})
	}
}

func TestFileOptionsValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		concurrency int
		want        string
	}{
		{DefaultFileConcurrency, ""},
		{1, ""},
		{0, "producer: Concurrency must be at least 1, got 0"},
		{-5, "producer: Concurrency must be at least 1, got -5"},
	}
	for _, tt := range tests {
		field := ""
		if tt.want != "" {
			field = "Concurrency"
		}
		checkValidate(t, FileOptions{Concurrency: tt.concurrency}.Validate(), field, tt.want)
	}
}

func checkValidate(t *testing.T, err error, field, want string) {
	t.Helper()
	if field == "" {
		if err != nil {
			t.Errorf("Validate = %v, want nil", err)
		}
		return
	}
	var ce *configerr.Error
	if !errors.As(err, &ce) || ce.Field != field || err.Error() != want {
		t.Errorf("Validate = %v (%T), want %q about field %s", err, err, want, field)
	}
}
