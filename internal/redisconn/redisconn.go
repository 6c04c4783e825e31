// Package redisconn turns a REDIS_URL into a Redis client shared by asynq and activator's own stores.
package redisconn

import (
	"errors"
	"fmt"
	"net/url"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Open parses rawURL (redis://, rediss:// or redis-sentinel://) and returns a client for it. Its
// errors never repeat the URL, which may hold a password. With redis-sentinel://, asynq v0.26.0
// ignores any database number: database 0 is used.
func Open(rawURL string) (redis.UniversalClient, error) {
	opt, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	c, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, errors.New("REDIS_URL: unsupported client type")
	}
	return c, nil
}

// Parse checks rawURL and returns asynq's connection options for it.
func Parse(rawURL string) (asynq.RedisConnOpt, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("REDIS_URL is not a URL: want redis://[:password@]host:port/db, rediss://… or redis-sentinel://…")
	}
	switch u.Scheme {
	case "redis", "rediss", "redis-sentinel":
	default:
		return nil, fmt.Errorf("REDIS_URL has scheme %q: want redis, rediss or redis-sentinel", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("REDIS_URL has no host: want redis://host:port/db")
	}
	opt, err := asynq.ParseRedisURI(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL (%s://%s%s) is not usable: check the database number and options", u.Scheme, u.Host, u.Path)
	}
	return opt, nil
}

// Redacted returns rawURL without its password, for logs.
func Redacted(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparseable)"
	}
	return u.Redacted()
}
