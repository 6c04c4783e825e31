package versori

import (
	"net/url"
	"time"

	"github.com/versori/activator/internal/configerr"
)

// DefaultConfig is the configuration used for fields left zero: the production API, 30 s a call.
func DefaultConfig() Config {
	return Config{BaseURL: DefaultBaseURL, Timeout: 30 * time.Second, UserAgent: "activator"}
}

// WithDefaults returns c with the zero fields DefaultConfig has set from it.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	if c.BaseURL == "" {
		c.BaseURL = d.BaseURL
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.UserAgent == "" {
		c.UserAgent = d.UserAgent
	}
	return c
}

// Validate reports the first problem with c as it is (New first sets zero fields from
// DefaultConfig). Its errors are *configerr.Error, naming the field; they never show a credential.
func (c Config) Validate() error {
	if c.Auth == nil {
		return configerr.New("versori", "Auth", "is required (an API key or a signing key)")
	}
	u, err := url.Parse(c.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return configerr.New("versori", "BaseURL", "%q is not an http(s) URL", c.BaseURL)
	}
	if c.Timeout <= 0 {
		return configerr.New("versori", "Timeout", "must be positive, got %s", c.Timeout)
	}
	if c.HubID != "" {
		// Hub ids are ULIDs, as the API's ids are; a typo would otherwise surface only as a failed
		// look-up after a call whose outcome is unknown, the moment it matters most.
		if reason := ulidProblem(c.HubID); reason != "" {
			return configerr.New("versori", "HubID", "%q %s", c.HubID, reason)
		}
	}
	if c.Concurrency < 0 {
		return configerr.New("versori", "Concurrency", "must not be negative, got %d", c.Concurrency)
	}
	return nil
}
