package testutil

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// FreePort returns a TCP port on 127.0.0.1 that nothing listened on a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return port
}

// RedisServer is a redis-server process of the test's own, so that it can be stopped and started
// again without touching the Redis other tests share.
type RedisServer struct {
	t       testing.TB
	bin     string
	Port    int
	dir     string   // data directory, its own: a replica's full sync writes dump.rdb there, not in the package
	persist bool     // keep an append-only file in dir
	extra   []string // arguments before the usual ones: a config file, --sentinel, cluster options
	logPath string
	cmd     *exec.Cmd
	done    chan error
	Client  *redis.Client // the test's own client; it reconnects after a restart
}

// StartRedisServer starts a private redis-server on a free port and stops it when t ends. With persist,
// it keeps an append-only file in a directory of its own, so that its data survives a restart. extra
// arguments go first, so that they may start with a config file (as --sentinel needs).
func StartRedisServer(t testing.TB, persist bool, extra ...string) *RedisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server is not installed, and CI needs the tests that run their own (outage, Sentinel, Cluster): %v", err)
		}
		t.Skipf("redis-server is not installed (apt-get install redis-server), so this test cannot run its own: %v", err)
	}
	logDir := t.TempDir()
	r := &RedisServer{t: t, bin: bin, Port: FreePort(t), logPath: filepath.Join(logDir, "redis.log"),
		dir: t.TempDir(), persist: persist, extra: extra}
	r.Client = redis.NewClient(&redis.Options{Addr: r.Addr(), DialTimeout: time.Second, MaxRetries: -1})
	t.Cleanup(func() {
		r.Client.Close()
		r.Kill()
		if t.Failed() {
			if b, err := os.ReadFile(r.logPath); err == nil {
				t.Logf("redis-server log:\n%s", b)
			}
		}
	})
	r.Start()
	return r
}

// Addr is the server's host:port.
func (r *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(r.Port) }

// URL is the server's redis:// URL, database 0.
func (r *RedisServer) URL() string { return "redis://" + r.Addr() + "/0" }

// Start starts the server (again, on the same port and data directory) and waits until it answers
// PING.
func (r *RedisServer) Start() {
	t := r.t
	t.Helper()
	if r.cmd != nil {
		t.Fatal("redis-server is already running")
	}
	args := append(append([]string{}, r.extra...), "--port", strconv.Itoa(r.Port), "--save", "", "--bind", "127.0.0.1", "--dir", r.dir)
	if r.persist {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	} else {
		args = append(args, "--appendonly", "no")
	}
	logf, err := os.OpenFile(r.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(r.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	r.cmd, r.done = cmd, done

	ping := redis.NewClient(&redis.Options{Addr: r.Addr(), DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer ping.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := ping.Ping(ctx).Err()
		cancel()
		if err == nil {
			return
		}
		select {
		case werr := <-done:
			r.cmd = nil
			t.Fatalf("redis-server on port %d exited at start (%v); last PING: %v", r.Port, werr, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on port %d does not answer PING after 10 s: %v", r.Port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the server with SIGTERM, as an orchestrator would, and waits for it to exit. With an
// append-only file, Redis flushes it before exiting.
func (r *RedisServer) Stop() {
	t := r.t
	t.Helper()
	if r.cmd == nil {
		t.Fatal("redis-server is not running")
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		r.cmd = nil
		if err != nil {
			t.Fatalf("redis-server exited with %v after SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("redis-server did not exit within 10 s of SIGTERM")
	}
}

// Kill ends the server at once, if it runs, as a crash would.
func (r *RedisServer) Kill() {
	if r.cmd == nil {
		return
	}
	r.cmd.Process.Kill()
	<-r.done
	r.cmd = nil
}

// Signal sends sig to the running server: SIGSTOP and SIGCONT freeze and thaw it, as a Redis that
// hangs without closing its connections.
func (r *RedisServer) Signal(sig os.Signal) error {
	if r.cmd == nil {
		return errors.New("redis-server is not running")
	}
	return r.cmd.Process.Signal(sig)
}
