package pairs_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/pairs"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
)

func TestRegistry(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	r := pairs.New(db.Client)
	ctx := context.Background()
	const a, b = "act:01HZY8J5Q0A1B2C3D4E5F6G7H8:alice", "act:01HZY8J5Q0A1B2C3D4E5F6G7H8:bob"
	type step struct {
		name    string
		release bool // else claim
		queue   string
		ids     []string
		want    []pairs.Claim // claim
		wantN   int           // release
	}
	steps := []step{
		{name: "first claim", queue: "eu", ids: []string{a, b},
			want: []pairs.Claim{{State: pairs.Fresh, Owner: "eu"}, {State: pairs.Fresh, Owner: "eu"}}},
		{name: "again on the same queue", queue: "eu", ids: []string{a},
			want: []pairs.Claim{{State: pairs.Seen, Owner: "eu"}}},
		{name: "on another queue", queue: "us", ids: []string{b, a},
			want: []pairs.Claim{{State: pairs.Elsewhere, Owner: "eu"}, {State: pairs.Elsewhere, Owner: "eu"}}},
		{name: "another queue cannot release", release: true, queue: "us", ids: []string{a}, wantN: 0},
		{name: "still elsewhere", queue: "us", ids: []string{a},
			want: []pairs.Claim{{State: pairs.Elsewhere, Owner: "eu"}}},
		{name: "the owner releases", release: true, queue: "eu", ids: []string{a}, wantN: 1},
		{name: "a released pair is seen, on any queue", queue: "us", ids: []string{a, b},
			want: []pairs.Claim{{State: pairs.Seen, Owner: "us"}, {State: pairs.Elsewhere, Owner: "eu"}}},
		{name: "and now owned there", queue: "eu", ids: []string{a},
			want: []pairs.Claim{{State: pairs.Elsewhere, Owner: "us"}}},
		{name: "a queue name that starts like a reply", queue: "s", ids: []string{"act:X:c"},
			want: []pairs.Claim{{State: pairs.Fresh, Owner: "s"}}},
		{name: "seen by that queue", queue: "s", ids: []string{"act:X:c"},
			want: []pairs.Claim{{State: pairs.Seen, Owner: "s"}}},
		{name: "elsewhere from it", queue: "o", ids: []string{"act:X:c"},
			want: []pairs.Claim{{State: pairs.Elsewhere, Owner: "s"}}},
		{name: "nothing to claim", queue: "eu", ids: nil, want: nil},
		{name: "a queue whose name starts another's", queue: "e", ids: []string{b},
			want: []pairs.Claim{{State: pairs.Elsewhere, Owner: "eu"}}},
		{name: "releasing a pair never claimed", release: true, queue: "eu", ids: []string{"act:X:never"}, wantN: 1},
		{name: "records it as seen", queue: "us", ids: []string{"act:X:never"},
			want: []pairs.Claim{{State: pairs.Seen, Owner: "us"}}},
	}
	for _, s := range steps {
		if s.release {
			n, err := r.Release(ctx, s.queue, s.ids)
			if err != nil || n != s.wantN {
				t.Fatalf("%s: Release = %d, %v; want %d", s.name, n, err, s.wantN)
			}
			continue
		}
		got, err := r.Claim(ctx, s.queue, s.ids)
		if err != nil {
			t.Fatalf("%s: Claim: %v", s.name, err)
		}
		if len(got) != len(s.want) {
			t.Fatalf("%s: Claim = %+v, want %+v", s.name, got, s.want)
		}
		for i := range got {
			if got[i].State != s.want[i].State || got[i].Owner != s.want[i].Owner {
				t.Errorf("%s: Claim[%d] = %+v, want %+v", s.name, i, got[i], s.want[i])
			}
			if got[i].State == pairs.Elsewhere && time.Since(got[i].Since) > time.Minute {
				t.Errorf("%s: claimed since %s, want within the last minute", s.name, got[i].Since)
			}
		}
	}
	// Taking over: only while the owner's entry is the one read.
	c, err := r.Claim(ctx, "us", []string{b})
	if err != nil || c[0].State != pairs.Elsewhere {
		t.Fatalf("Claim = %+v, %v", c, err)
	}
	if ok, err := r.TakeOver(ctx, "us", b, pairs.Claim{State: pairs.Elsewhere, Owner: "eu"}); err != nil || ok {
		t.Fatalf("TakeOver with a stale entry = %v, %v; want false", ok, err)
	}
	if ok, err := r.TakeOver(ctx, "us", b, c[0]); err != nil || !ok {
		t.Fatalf("TakeOver = %v, %v; want true", ok, err)
	}
	if c, _ := r.Claim(ctx, "us", []string{b}); c[0].State != pairs.Seen {
		t.Errorf("after the take-over, us claims %+v, want Seen", c[0])
	}
	if c, _ := r.Claim(ctx, "eu", []string{b}); c[0].State != pairs.Elsewhere || c[0].Owner != "us" {
		t.Errorf("after the take-over, eu claims %+v, want Elsewhere (us)", c[0])
	}

	// An old claim of the owner's own is renewed by its next claim, so that its enqueue does not
	// look idle to another queue.
	const renewed = "act:X:renewed"
	if _, err := r.Claim(ctx, "eu", []string{renewed}); err != nil {
		t.Fatal(err)
	}
	old := "eu|" + strconv.FormatInt(time.Now().Add(-5*time.Minute).Unix(), 10)
	if err := db.Client.Set(ctx, rediskeys.Pair(renewed), old, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if c, _ := r.Claim(ctx, "eu", []string{renewed}); c[0].State != pairs.Seen {
		t.Fatalf("the owner's claim = %+v, want Seen", c[0])
	}
	if c, _ := r.Claim(ctx, "us", []string{renewed}); c[0].State != pairs.Elsewhere || time.Since(c[0].Since) > time.Minute {
		t.Errorf("after the owner's claim, another queue sees %+v, want a claim of now", c[0])
	}

	// Every key is a pair's, under the hash tag {pairs} of the {pairs} hash tag.
	keys, err := db.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if !strings.HasPrefix(k, rediskeys.Pair("act:")) {
			t.Errorf("unexpected key %q", k)
		}
	}
}
