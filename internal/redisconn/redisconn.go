// Package redisconn turns a Redis URL into a Redis client shared by asynq and activator's own stores.
//
// Six forms are accepted:
//
//	redis://[[user]:password@]host:port[/db]
//	rediss://[[user]:password@]host:port[/db]                      TLS
//	redis-sentinel://[:password@]host:port[,host:port...]?master=NAME[&sentinel_username=U][&sentinel_password=P]
//	rediss-sentinel://…                                            TLS to the Sentinels and the master
//	redis-cluster://[[user]:password@]host:port[,host:port...]
//	rediss-cluster://…                                             TLS to every node
//
// TLS is a scheme of its own, as rediss:// is for one server, rather than a query option: a URL says
// whether its connections are encrypted at a glance, and a redis-cluster:// URL takes no options. Each
// connection checks the certificate against the system's roots (SSL_CERT_FILE, SSL_CERT_DIR) and the
// host it dials: with Sentinel and Cluster that is the address the Sentinels or the cluster announce
// (usually an IP), which the certificates must name.
//
// With redis-sentinel://, the password is the Sentinels' (asynq v0.26.0 hands it to the Sentinels
// only, not to the master), before the @ or as sentinel_password= (with sentinel_username= for an
// ACL user), and the data lives in database 0 of the master: asynq ignores a database number there,
// so Parse refuses any other than 0 rather than let it be silently ignored. Parse refuses any other
// query parameter, in every form, for the same reason. With
// redis-cluster://, the hosts are seed nodes (any of the cluster's masters will do) and the password
// is the nodes'; a cluster has database 0 only. Every key of a queue, asynq's and activator's,
// carries the queue's hash tag ({activations} for the default queue), so one queue lives on one node
// of a cluster; only asynq's registries of queues, servers and workers (asynq:queues, asynq:servers,
// asynq:workers and their per-server keys) and the intake's webhook ids live elsewhere, and nothing
// touches them together with a queue's keys.
package redisconn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/configerr"
)

// DefaultURL is the Redis the commands use unless told otherwise.
const DefaultURL = "redis://127.0.0.1:6379/0"

// bad is an error about the URL. A command names its variable in the field's place, and in place of
// any word "URL" in the problem too (envflag.Explain): say what is wrong without that word.
func bad(format string, args ...any) error { return configerr.New("redisconn", "URL", format, args...) }

const forms = "want redis://[:password@]host:port/db, rediss://…, redis-sentinel://host:port[,host:port…]?master=NAME, " +
	"redis-cluster://host:port[,host:port…], or rediss-sentinel:// or rediss-cluster:// for TLS"

// Open parses rawURL and returns a client for it: a *redis.Client, a Sentinel-backed failover client,
// or a *redis.ClusterClient. Its errors are like Parse's.
func Open(rawURL string) (redis.UniversalClient, error) {
	opt, err := Parse(rawURL)
	if err != nil {
		return nil, err
	}
	client := opt.MakeRedisClient()
	c, ok := client.(redis.UniversalClient)
	if !ok {
		return nil, bad("gives an unsupported client type %T", client)
	}
	return c, nil
}

// Parse checks rawURL and returns asynq's connection options for it: asynq.RedisClientOpt,
// asynq.RedisFailoverClientOpt or asynq.RedisClusterClientOpt. Its errors are *configerr.Error about
// the field "URL" ("redisconn: URL has no host: …"), for a command to name the variable or flag that
// gave it; they never repeat the password.
func Parse(rawURL string) (asynq.RedisConnOpt, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, bad("cannot be parsed: %s", forms)
	}
	switch u.Scheme {
	case "redis", "rediss", "redis-sentinel", "rediss-sentinel", "redis-cluster", "rediss-cluster":
	default:
		return nil, bad("has scheme %q: want redis, rediss, redis-sentinel, rediss-sentinel, redis-cluster or rediss-cluster", u.Scheme)
	}
	if u.Host == "" {
		return nil, bad("has no host: %s", forms)
	}
	if err := checkAddrs(u); err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "redis-cluster":
		return parseCluster(u)
	case "rediss-cluster":
		opt, err := parseCluster(u)
		if err != nil {
			return nil, err
		}
		c := opt.(asynq.RedisClusterClientOpt)
		c.TLSConfig = tlsConfig()
		return c, nil
	case "redis-sentinel", "rediss-sentinel":
		if err := checkSentinel(u); err != nil {
			return nil, err
		}
	}
	if err := checkQuery(u); err != nil {
		return nil, err
	}
	tlsSentinel := u.Scheme == "rediss-sentinel"
	if tlsSentinel {
		plain := *u
		plain.Scheme = "redis-sentinel"
		rawURL = plain.String()
	}
	opt, err := asynq.ParseRedisURI(rawURL)
	if err != nil {
		return nil, bad("(%s://%s%s) is not usable: check the database number and options", u.Scheme, u.Host, u.Path)
	}
	if c, ok := opt.(asynq.RedisClientOpt); ok && u.User != nil {
		// asynq drops the user name, which would log an ACL user in as "default" (docs/redis.md).
		c.Username = u.User.Username()
		return c, nil
	}
	if f, ok := opt.(asynq.RedisFailoverClientOpt); ok {
		// asynq reads master= only: the Sentinels' credentials in the query would be dropped, and
		// the Sentinels asked without them.
		q := u.Query()
		f.SentinelUsername = q.Get("sentinel_username")
		if pw := q.Get("sentinel_password"); pw != "" {
			f.SentinelPassword = pw
		}
		if tlsSentinel {
			// go-redis uses one TLS configuration for the Sentinels and for the master they name.
			f.TLSConfig = tlsConfig()
		}
		return f, nil
	}
	return opt, nil
}

// tlsConfig is the TLS configuration of the Sentinel and Cluster forms. It names no server: each
// connection checks the certificate against the host it dials (tls.DialWithDialer), which differs
// from node to node.
func tlsConfig() *tls.Config { return &tls.Config{MinVersion: tls.VersionTLS12} }

// checkAddrs refuses a host that is not host:port with a port from 1 to 65535 (the Sentinels and a
// cluster's nodes: each of the comma-separated list), which Parse would accept and every connection
// then fail on: a worker would wait for a Redis it can never reach.
func checkAddrs(u *url.URL) error {
	addrs, kind := []string{u.Host}, "host"
	switch u.Scheme {
	case "redis-sentinel", "rediss-sentinel":
		addrs, kind = strings.Split(u.Host, ","), "Sentinel"
	case "redis-cluster", "rediss-cluster":
		addrs, kind = strings.Split(u.Host, ","), "node"
	}
	for _, a := range addrs {
		what := fmt.Sprintf("host %q", a)
		if kind != "host" {
			what = fmt.Sprintf("(%s://%s): %s %q", u.Scheme, u.Host, kind, a)
		}
		_, port, err := net.SplitHostPort(a)
		if err != nil || port == "" {
			return bad("%s is not host:port (Redis's port is usually 6379)", what)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return bad("%s has port %s: a port is 1 to 65535", what, port)
		}
	}
	return nil
}

// checkSentinel refuses what asynq would silently ignore in a redis-sentinel:// URL: a missing master
// name, or a database number other than 0.
func checkSentinel(u *url.URL) error {
	if u.Query().Get("master") == "" {
		return bad("(%s://%s%s) names no master: add ?master=NAME, the name the Sentinels monitor", u.Scheme, u.Host, u.Path)
	}
	if db := strings.Trim(u.Path, "/"); db != "" && db != "0" {
		return bad("(%s://%s%s): with Sentinel the data lives in database 0 (asynq ignores a database number); drop /%s", u.Scheme, u.Host, u.Path, db)
	}
	return nil
}

// queryParams are the query parameters each scheme takes; asynq and go-redis would ignore any
// other silently (a sentinel_password misspelt, or go-redis's dial_timeout=, would connect without
// it), so Parse refuses it. The cluster forms take none (parseCluster).
func queryParams(scheme string) []string {
	if scheme == "redis-sentinel" || scheme == "rediss-sentinel" {
		return []string{"master", "sentinel_password", "sentinel_username"}
	}
	return nil
}

// checkQuery refuses a query parameter the scheme does not take, given twice, or a Sentinel password
// given both before the @ and as sentinel_password=. Its errors name the parameter, never its value.
func checkQuery(u *url.URL) error {
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return bad("(%s://%s%s) has a query that cannot be parsed: %s", u.Scheme, u.Host, u.Path, forms)
	}
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	slices.Sort(names) // the same URL gives the same error
	takes := queryParams(u.Scheme)
	for _, name := range names {
		switch {
		case !slices.Contains(takes, name):
			if len(takes) == 0 {
				return bad("(%s://%s%s) has the query parameter %q: %s:// takes none", u.Scheme, u.Host, u.Path, name, u.Scheme)
			}
			return bad("(%s://%s%s) has the query parameter %q, which is not one of %s", u.Scheme, u.Host, u.Path, name, strings.Join(takes, ", "))
		case len(q[name]) > 1:
			return bad("(%s://%s%s) gives the query parameter %q %d times: give it once", u.Scheme, u.Host, u.Path, name, len(q[name]))
		}
	}
	if _, ok := u.User.Password(); ok && q.Has("sentinel_password") {
		return bad("(%s://%s%s) gives the Sentinels' password twice, before the @ and as sentinel_password=: give it once", u.Scheme, u.Host, u.Path)
	}
	return nil
}

// parseCluster reads redis-cluster://[[user]:password@]host:port[,host:port...]; asynq.ParseRedisURI
// has no cluster form.
func parseCluster(u *url.URL) (asynq.RedisConnOpt, error) {
	if db := strings.Trim(u.Path, "/"); db != "" && db != "0" {
		return nil, bad("(%s://%s%s): a Redis Cluster has database 0 only; drop /%s", u.Scheme, u.Host, u.Path, db)
	}
	if u.RawQuery != "" {
		return nil, bad("(%s://%s%s) has options (?…): %s:// takes none", u.Scheme, u.Host, u.Path, u.Scheme)
	}
	opt := asynq.RedisClusterClientOpt{Addrs: strings.Split(u.Host, ",")}
	if u.User != nil {
		opt.Username = u.User.Username()
		opt.Password, _ = u.User.Password()
	}
	return opt, nil
}

// Redacted returns rawURL without its password, for logs.
func Redacted(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparseable)"
	}
	// A password in the query (go-redis's password=, sentinel_password=) is no part of the forms,
	// but an operator may try one: mask it too, along with anything named like a secret.
	if q := u.Query(); len(q) > 0 {
		masked := false
		for name := range q {
			n := strings.ToLower(name)
			if strings.Contains(n, "pass") || strings.Contains(n, "secret") || strings.Contains(n, "token") || strings.Contains(n, "key") {
				q.Set(name, "xxxxx")
				masked = true
			}
		}
		if masked {
			u.RawQuery = q.Encode()
		}
	}
	return u.Redacted()
}

// Refused returns the configuration error behind err, the error of a command sent to the Redis that
// rawURL names, when Redis refused what the URL asks for: its database number
// (redis://…/99: "ERR DB index is out of range"), its password, or a database on a cluster; or when
// the TLS certificate Redis shows is not trusted here. It is
// a *configerr.Error about the field "URL", like Parse's, and names the URL without its password.
// Otherwise it returns nil: err is a failure to reach Redis, or of the command itself, which may
// pass.
func Refused(rawURL string, err error) error {
	if err == nil {
		return nil
	}
	u, perr := url.Parse(rawURL)
	if perr != nil {
		return nil
	}
	where := u.Scheme + "://" + u.Host + u.Path
	// A certificate this host does not trust stays untrusted however long the worker waits. go-redis's
	// Sentinel client flattens the TLS error into its message, hence the text as well.
	var ce *tls.CertificateVerificationError
	if errors.As(err, &ce) || strings.Contains(err.Error(), "tls: failed to verify certificate") {
		why := err.Error()
		if ce != nil {
			why = ce.Err.Error()
		}
		return bad("(%s): Redis's TLS certificate is not trusted (%s): point SSL_CERT_FILE at the CA that signed it, and have the "+
			"certificate name the address dialled (with Sentinel and Cluster, the one they announce)", where, why)
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return nil
	}
	msg := re.Error()
	switch {
	case strings.Contains(msg, "DB index is out of range") || strings.Contains(msg, "invalid DB index"):
		return bad("(%s) names database %s, which Redis refuses (%s): a Redis has databases 0 to 15 unless its databases setting says more",
			where, strings.Trim(u.Path, "/"), msg)
	case strings.HasPrefix(msg, "WRONGPASS") || strings.HasPrefix(msg, "NOAUTH") ||
		strings.Contains(msg, "invalid password") || strings.Contains(msg, "without any password configured") ||
		strings.Contains(msg, "invalid username-password"):
		return bad("(%s): Redis refuses the password (%s)", where, msg)
	case strings.Contains(msg, "SELECT is not allowed in cluster mode"):
		return bad("(%s) names a database, but Redis is a cluster: use redis-cluster://", where)
	}
	return nil
}
