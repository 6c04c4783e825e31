package enqueuecmd_test

import (
	"context"
	"strings"
	"testing"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/testutil"
)

// TestFileWarnsOfEviction runs `enqueue file` against private redis-servers: one that evicts gets a
// warning naming its policy, one whose ACL refuses CONFIG a warning that it could not be checked,
// and a noeviction one none; every run enqueues its row.
func TestFileWarnsOfEviction(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		args     []string
		noConfig bool
		want     string // in stderr; "" for no warning
	}{
		{"noeviction", nil, false, ""},
		{"allkeys-lru", []string{"--maxmemory-policy", "allkeys-lru", "--maxmemory", "1gb"}, false,
			"warning: Redis's maxmemory-policy is allkeys-lru, not noeviction"},
		{"CONFIG refused", nil, true, "warning: could not check Redis's maxmemory-policy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := testutil.StartRedisServer(t, false, tc.args...)
			url := srv.URL()
			if tc.noConfig {
				if err := srv.Client.Do(context.Background(), "ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all", "-config").Err(); err != nil {
					t.Fatal(err)
				}
				url = "redis://app:pw@" + srv.Addr() + "/0"
			}
			path := testutil.WriteJSONL(t, t.TempDir()+"/in.jsonl", request("u-evict"))
			r := run(t, map[string]string{"REDIS_URL": url}, "", "file", "--quiet", path)
			if r.code != enqueuecmd.ExitOK {
				t.Fatalf("enqueue file: %v", r)
			}
			if got := strings.Contains(r.stderr, "warning: "); got != (tc.want != "") || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("stderr does not say %q (or warns when it should not):\n%s", tc.want, r.stderr)
			}
			if strings.Contains(r.stderr, "pw@") {
				t.Errorf("stderr shows the password:\n%s", r.stderr)
			}
		})
	}
}
