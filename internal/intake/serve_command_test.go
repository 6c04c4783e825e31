package intake_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/intake"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
)

// These tests cover `enqueue serve`, the command that runs the intake.

// runCmd runs the enqueue command with vars as its whole environment.
func runCmd(ctx context.Context, vars map[string]string, args ...string) (code int, stdout, stderr *testutil.SyncBuffer) {
	stdout, stderr = &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
	env := enqueuecmd.Env{Stdin: strings.NewReader(""), Stdout: stdout, Stderr: stderr,
		Lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}
	return enqueuecmd.Run(ctx, args, env), stdout, stderr
}

func TestServeCommandRefusesToStart(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	for _, tc := range []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"no secret or token", nil, nil, "INTAKE_WEBHOOK_SECRET"},
		{"empty secret and token", map[string]string{"INTAKE_WEBHOOK_SECRET": " , ", "INTAKE_TOKENS": ","}, nil, "--insecure"},
		{"bad secret", map[string]string{"INTAKE_WEBHOOK_SECRET": secret + ",whsec_!!NOT-BASE64-SECRET"}, nil, "webhook secret #2"},
		{"short token", map[string]string{"INTAKE_TOKENS": "SHORTTOKEN"}, nil, "bearer token #1"},
		{"max batch 0", map[string]string{"INTAKE_TOKENS": tokenA}, []string{"--max-batch", "0"}, "--max-batch"},
		{"bad max batch variable", map[string]string{"INTAKE_TOKENS": tokenA, "INTAKE_MAX_BATCH": "lots"}, nil, "INTAKE_MAX_BATCH"},
		{"argument", map[string]string{"INTAKE_TOKENS": tokenA}, []string{"extra"}, "no arguments"},
		{"bad Redis URL", map[string]string{"INTAKE_TOKENS": tokenA, "REDIS_URL": "http://x"}, nil, "REDIS_URL"},
		{"--webhook-secret refused", nil, []string{"--webhook-secret", secret}, "-webhook-secret is not accepted: a secret on the command line shows in ps and /debug/pprof/cmdline; set INTAKE_WEBHOOK_SECRET, or INTAKE_WEBHOOK_SECRET_FILE to a file holding it, instead"},
		{"--tokens= refused", nil, []string{"--tokens=" + tokenA}, "-tokens is not accepted: a secret on the command line shows in ps and /debug/pprof/cmdline; set INTAKE_TOKENS, or INTAKE_TOKENS_FILE to a file holding it, instead"},
		{"tokens and their file", map[string]string{"INTAKE_TOKENS": tokenA, "INTAKE_TOKENS_FILE": "/nonexistent"}, nil, "INTAKE_TOKENS and INTAKE_TOKENS_FILE are both set: set one of them"},
		{"unreadable secret file", map[string]string{"INTAKE_WEBHOOK_SECRET_FILE": "/nonexistent/whsec"}, nil, "INTAKE_WEBHOOK_SECRET_FILE: cannot read it: open /nonexistent/whsec: no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(context.Background(), tc.vars, append([]string{"serve", "--addr", "127.0.0.1:0"}, tc.args...)...)
			if code != enqueuecmd.ExitUsage {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, enqueuecmd.ExitUsage, stderr)
			}
			if lines := strings.Count(stderr.String(), "\n"); lines != 1 || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr (%d lines) %q, want one line with %q", lines, stderr, tc.want)
			}
			for _, leak := range []string{secret, "NOT-BASE64-SECRET", "SHORTTOKEN", tokenA} {
				if strings.Contains(stderr.String()+stdout.String(), leak) {
					t.Errorf("output shows a secret: %s", stderr)
				}
			}
		})
	}
}

func TestServeCommandHelpHidesSecrets(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	code, stdout, stderr := runCmd(context.Background(), map[string]string{"INTAKE_WEBHOOK_SECRET": secret, "INTAKE_TOKENS": tokenA}, "serve", "-h")
	if code != enqueuecmd.ExitOK {
		t.Fatalf("exit %d", code)
	}
	out := stdout.String() + stderr.String()
	for _, want := range []string{"-addr", "-insecure", "-max-batch", "INTAKE_WEBHOOK_SECRET or INTAKE_WEBHOOK_SECRET_FILE", "INTAKE_TOKENS or INTAKE_TOKENS_FILE", "REDIS_URL or REDIS_URL_FILE", "-queue"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, secret) || strings.Contains(out, tokenA) {
		t.Errorf("help shows a secret:\n%s", out)
	}
	code, stdout, _ = runCmd(context.Background(), nil, "help")
	if code != enqueuecmd.ExitOK || !strings.Contains(stdout.String(), "enqueue serve") {
		t.Errorf("usage lacks serve: %s", stdout)
	}
}

// TestServeCommand runs `enqueue serve` until its context is cancelled.
func TestServeCommand(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	secret := newSecret(t)
	// The tokens from a mounted file, as a Kubernetes Secret gives them: a trailing newline.
	vars := map[string]string{"REDIS_URL": db.URL(), "INTAKE_WEBHOOK_SECRET": secret,
		"INTAKE_TOKENS_FILE": testutil.WriteFile(t, "tokens", tokenA+","+tokenB+"\n")}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		code           int
		stdout, stderr *testutil.SyncBuffer
	}
	done := make(chan result, 1)
	stderrc := make(chan *testutil.SyncBuffer, 1)
	go func() {
		stdout, stderr := &testutil.SyncBuffer{}, &testutil.SyncBuffer{}
		stderrc <- stderr
		env := enqueuecmd.Env{Stdin: strings.NewReader(""), Stdout: stdout, Stderr: stderr,
			Lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok }}
		code := enqueuecmd.Run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--batch", "signups", "--max-batch", "2"}, env)
		done <- result{code, stdout, stderr}
	}()
	stderr := <-stderrc
	addrRE := regexp.MustCompile(`"msg":"intake listening","addr":"([^"]+)"`)
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; {
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
			break
		}
		select {
		case r := <-done:
			t.Fatalf("serve exited %d:\n%s", r.code, r.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not start:\n%s", stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	e := &env{t: t, db: db} // for wantTasks
	client := &http.Client{Timeout: 10 * time.Second}
	url := "http://" + addr
	post := func(path string, b []byte, h http.Header) answer {
		t.Helper()
		req, _ := http.NewRequest("POST", url+path, bytes.NewReader(b))
		for k, vs := range h {
			req.Header[k] = vs
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return answer{code: resp.StatusCode, header: resp.Header, body: rb}
	}
	b := body(t, testutil.Request("u-1"))
	a := post("/v1/activations", b, signed(t, secret, "msg_1", time.Now(), b))
	if a.code != 202 {
		t.Fatalf("signed POST: %s", a)
	}
	if acc := decode[intake.Accepted](t, a); acc.Batch != "signups" || acc.Status != producer.Enqueued {
		t.Errorf("accepted %+v", acc)
	}
	if a := post("/v1/activations", body(t, testutil.Request("u-2")), bearerHeader(tokenB)); a.code != 202 {
		t.Errorf("bearer POST: %s", a)
	}
	if a := post("/v1/activations", body(t, testutil.Request("u-3")), nil); a.code != 401 {
		t.Errorf("unauthenticated POST: %s", a)
	}
	three := body(t, []any{testutil.Request("u-4"), testutil.Request("u-5"), testutil.Request("u-6")})
	if a := post("/v1/activations:batch", three, bearerHeader(tokenA)); a.code != 413 {
		t.Errorf("batch over --max-batch 2: %s", a)
	}
	resp, err := client.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("readyz: %d", resp.StatusCode)
	}
	e.wantTasks(taskID("u-1"), taskID("u-2"))

	cancel()
	select {
	case r := <-done:
		if r.code != enqueuecmd.ExitOK {
			t.Errorf("exit %d after cancel:\n%s", r.code, r.stderr)
		}
		if out := r.stderr.String() + r.stdout.String(); strings.Contains(out, secret) || strings.Contains(out, tokenA) || strings.Contains(out, tokenB) {
			t.Errorf("output shows a secret:\n%s", out)
		}
		if !strings.Contains(r.stderr.String(), "intake stopped") {
			t.Errorf("no stop line:\n%s", r.stderr)
		}
		for _, l := range strings.Split(strings.TrimSuffix(r.stderr.String(), "\n"), "\n") {
			if !json.Valid([]byte(l)) {
				t.Errorf("a log line is not JSON: %q", l)
			}
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop after cancel")
	}
}

// TestServeCommandInsecure starts without credentials when told to, and says so.
func TestServeCommandInsecure(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var (
		code   int
		stderr *testutil.SyncBuffer
	)
	go func() {
		defer close(done)
		code, _, stderr = runCmd(ctx, map[string]string{"REDIS_URL": db.URL()}, "serve", "--insecure", "--addr", "127.0.0.1:0")
	}()
	time.Sleep(300 * time.Millisecond)
	cancel()
	<-done
	if code != enqueuecmd.ExitOK {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	if !strings.Contains(stderr.String(), "without authentication") {
		t.Errorf("no warning about --insecure:\n%s", stderr)
	}
}
