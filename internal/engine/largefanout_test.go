package engine_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
)

// crowd is an event with n recipients on one channel due in an hour, served a page at a time.
// It mints a secret once per dispatch and counts the calls. failAt makes the page at that offset
// fail once (an interrupted fan-out).
type crowd struct {
	n      int
	mints  *atomic.Int32
	failAt int
	failed *atomic.Bool
	delay  time.Duration // each page takes this long (a slow member directory)
	starts *atomic.Int32 // when set, counts the pages asked for from the beginning
}

func (crowd) ID() string { return "test.crowd" }
func (crowd) Channels(context.Context, *events.Dispatch) ([]events.Channel, error) {
	return []events.Channel{{Key: "digest", Transport: "email", Time: events.In(time.Hour)}}, nil
}
func (c crowd) Recipients(ctx context.Context, d *events.Dispatch, ch events.Channel) ([]events.Recipient, error) {
	return nil, errors.New("paged only")
}
func (c crowd) RecipientsPage(_ context.Context, _ *events.Dispatch, _ events.Channel, cursor string, limit int) ([]events.Recipient, string, error) {
	if cursor == "" && c.starts != nil {
		c.starts.Add(1)
	}
	time.Sleep(c.delay)
	from := 0
	if cursor != "" {
		from, _ = strconv.Atoi(cursor)
	}
	if c.failAt > 0 && from >= c.failAt && c.failed.CompareAndSwap(false, true) {
		return nil, "", errors.New("the member directory timed out")
	}
	to := min(from+limit, c.n)
	rs := make([]events.Recipient, 0, to-from)
	for i := from; i < to; i++ {
		rs = append(rs, events.Recipient{ID: "m" + strconv.Itoa(i), Address: fmt.Sprintf("m%d@crowd.example", i)})
	}
	if to >= c.n {
		return rs, "", nil
	}
	return rs, strconv.Itoa(to), nil
}
func (c crowd) SendVariables(context.Context, *events.Dispatch) (map[string]any, error) {
	c.mints.Add(1)
	return map[string]any{"code": events.NewSecret("code-" + strconv.Itoa(int(c.mints.Load())))}, nil
}
func (crowd) Templates() fs.FS {
	return fstest.MapFS{"email.text.tmpl": {Data: []byte(`digest`)}}
}

func (b *bundle) countReceipts(id string) int {
	var n int
	_ = b.pool.QueryRow(context.Background(), `SELECT count(*) FROM herald.receipts WHERE dispatch_id = $1`, id).Scan(&n)
	return n
}

// TestLargeFanOutInChunks: a fan-out larger than one chunk commits in chunks, survives an
// interruption (it resumes where it stopped, creating each receipt once), keeps its one minted
// value, and is time-sliced without using up its attempts (issue 6, item 8).
func TestLargeFanOutInChunks(t *testing.T) {
	t.Parallel()
	ev := crowd{n: 25_000, mints: &atomic.Int32{}, failAt: 12_000, failed: &atomic.Bool{}}
	b := setup(t, withEvents(ev), withConfig(func(c *engine.Config) {
		c.FanoutChunk = 1000
		c.Lease, c.TaskTimeout, c.SendTimeout = 4*time.Second, 2*time.Second, time.Second // 1s slices
	})).start()
	id, err := dispatchID(b.client.Dispatch(t.Context(), "test.crowd", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	d := b.waitDispatch(id, ledger.DispatchFannedOut, 60*time.Second)
	if n := b.countReceipts(id); n != ev.n {
		t.Fatalf("%d receipts for %d recipients", n, ev.n)
	}
	if !ev.failed.Load() {
		t.Fatal("the interruption never happened")
	}
	if m := ev.mints.Load(); m != 1 {
		t.Fatalf("SendVariables ran %d times: a committed minted value must be reused", m)
	}
	// Attempt 1 was interrupted (retrying), attempt 2 finished; time slices gave theirs back.
	if d.Attempt != 2 {
		t.Fatalf("attempt %d, want 2 (one interruption; slices do not count)", d.Attempt)
	}
}
