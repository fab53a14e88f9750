package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/faultproxy"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/tasks"
)

// viaProxy rebuilds b's worker so that it reaches PostgreSQL through a fault proxy; the test's
// own checks keep using b.pool directly. The rebuilt worker registers its metrics on reg.
func (b *bundle) viaProxy(t *testing.T, reg *prometheus.Registry) *faultproxy.Proxy {
	t.Helper()
	url := b.pool.Config().ConnString()
	p := faultproxy.Start(t, testenv.Target(t, url))
	pool, err := pgxpool.New(context.Background(), testenv.Via(t, url, p.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	b.cfg.DB, b.deps.Metrics = pool, reg
	b.rebuild(t)
	return p
}

// TestConfirmedSendOutlivesPostgresOutage: PostgreSQL refuses connections while the SMTP server
// is answering DATA, for longer than the old recorder's few quick tries; the confirmed send is
// recorded once PostgreSQL answers again, and the message is not sent twice (issue 6, item 1).
func TestConfirmedSendOutlivesPostgresOutage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	proxy := b.viaProxy(t, prometheus.NewRegistry())
	b.start()
	inData := b.smtp.SetDelay(time.Second)
	id := b.dispatch(t, "accounts.password_reset")
	select {
	case <-inData:
	case <-time.After(10 * time.Second):
		t.Fatal("the send never reached DATA")
	}
	proxy.SetMode(faultproxy.Refuse) // the outage starts while the server holds the message
	b.smtp.WaitFor(t, 1, 10*time.Second)
	time.Sleep(6 * time.Second) // the outage lasts 6s: the old recorder gave up after ~3s
	proxy.SetMode(faultproxy.Pass)
	r := b.waitReceipt(id, ledger.ReceiptSent, 15*time.Second)
	if r.Attempt != 1 || r.InDoubt {
		t.Fatalf("attempt %d in_doubt %v: want the first attempt's send recorded", r.Attempt, r.InDoubt)
	}
	b.waitIdle()
	if n := len(b.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails after a 6s PostgreSQL outage mid-send, want 1", n)
	}
}

// TestOutageLongerThanTheLease: when the outage outlasts the lease another claim may take the
// delivery over; whatever happens, every email beyond the first belongs to a receipt flagged in
// doubt and carries the same Message-ID (counted window (c)).
func TestOutageLongerThanTheLease(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	b := setup(t, withConfig(func(c *engine.Config) {
		c.Lease, c.TaskTimeout, c.SendTimeout, c.ShutdownTimeout = 3*time.Second, 2*time.Second, time.Second, 2*time.Second
	}))
	proxy := b.viaProxy(t, reg)
	b.start()
	inData := b.smtp.SetDelay(500 * time.Millisecond)
	id := b.dispatch(t, "accounts.password_reset")
	<-inData
	proxy.SetMode(faultproxy.Refuse)
	b.smtp.WaitFor(t, 1, 10*time.Second)
	time.Sleep(5 * time.Second) // longer than the 3s lease
	proxy.SetMode(faultproxy.Pass)
	r := b.waitReceipt(id, ledger.ReceiptSent, 20*time.Second)
	b.waitIdle()
	msgs := b.smtp.Messages()
	if len(msgs) > 1 {
		if !r.InDoubt {
			t.Fatalf("%d emails but the receipt is not flagged in doubt", len(msgs))
		}
		for _, m := range msgs {
			if m.MessageID != msgs[0].MessageID {
				t.Fatalf("duplicates carry different Message-IDs: %q %q", m.MessageID, msgs[0].MessageID)
			}
		}
		if n := testutil.ToFloat64(gathered(t, reg, "herald_in_doubt_total")); n < 1 {
			t.Fatal("a duplicate was not counted in herald_in_doubt_total")
		}
	}
	t.Logf("%d email(s), attempt %d, in_doubt %v", len(msgs), r.Attempt, r.InDoubt)
}

// TestWaitingForPostgresUsesNoRetries: a dispatch sent through Redis while PostgreSQL is down
// waits for it however long the outage, without using up asynq's retries (which would archive it
// with no record), and is delivered once PostgreSQL is back (issue 6, item 5).
func TestWaitingForPostgresUsesNoRetries(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	b := setup(t)
	proxy := b.viaProxy(t, reg)
	proxy.SetMode(faultproxy.Refuse)
	b.start()
	c, err := engine.NewClient(engine.Config(herald.Config{Redis: b.redis, SecretKeys: secretKeys, Queue: b.queue, AsynqRetries: 2}.WithDefaults()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id, err := dispatchID(c.Dispatch(t.Context(), "accounts.password_reset", user("42"), nil))
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	// The outage lasts 5s. With 2 retries and ordinary failures (200ms backoff here), the task
	// would be archived within a second or two of it.
	time.Sleep(5 * time.Second)
	if n := testutil.ToFloat64(gathered(t, reg, "herald_tasks_waiting_for_postgres")); n != 1 {
		t.Fatalf("herald_tasks_waiting_for_postgres = %v during the outage, want 1", n)
	}
	info, err := insp.GetTaskInfo(b.queue, tasks.DispatchTaskID(id, 0))
	if err != nil {
		t.Fatalf("the dispatch task is gone from Redis during the outage: %v", err)
	}
	if info.State == asynq.TaskStateArchived || info.Retried > 0 {
		t.Fatalf("state %v, retried %d: waiting for PostgreSQL used up retries", info.State, info.Retried)
	}
	proxy.SetMode(faultproxy.Pass)
	b.waitReceipt(id, ledger.ReceiptSent, 40*time.Second)
	if n := len(b.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails", n)
	}
	waitFor(t, 10*time.Second, "the gauge to fall back", func() bool {
		return testutil.ToFloat64(gathered(t, reg, "herald_tasks_waiting_for_postgres")) == 0
	})
}

// TestRedisOutageLosesNothing: Redis refuses the worker for a few seconds while dispatches
// committed through the outbox keep coming; once it answers again every dispatch is delivered
// once (the promoter re-enqueues what it could not hand over).
func TestRedisOutageLosesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	proxy := faultproxy.Start(t, b.redis.Addr)
	wr := b.redis
	wr.Addr = proxy.Addr()
	b.cfg.Redis = wr
	b.rebuild(t)
	b.start()
	var ids []string
	for i := range 12 {
		if i == 4 {
			proxy.SetMode(faultproxy.Refuse)
		}
		if i == 8 {
			time.Sleep(3 * time.Second)
			proxy.SetMode(faultproxy.Pass)
		}
		ids = append(ids, b.dispatchTx(t, "42"))
	}
	for _, id := range ids {
		b.waitReceipt(id, ledger.ReceiptSent, 60*time.Second)
	}
	b.waitIdle()
	if n := len(b.smtp.Messages()); n != len(ids) {
		t.Fatalf("%d emails for %d dispatches across a Redis outage", n, len(ids))
	}
}

// TestSMTPFaultsThroughTheEngine: a relay that drops the connection after the final "." (having
// kept the message), and one slower than the send timeout, leave the delivery in doubt: it is
// retried with the same Message-ID, sent, flagged and counted (counted window (b)).
func TestSMTPFaultsThroughTheEngine(t *testing.T) {
	t.Parallel()
	type fault struct {
		before func(b *bundle)            // sets the relay up
		after  func(b *bundle, id string) // runs once the dispatch is made
	}
	for name, f := range map[string]fault{
		"drop after the final dot": {before: func(b *bundle) { b.smtp.DropAfterData(1) }},
		"slower than the send timeout": {
			before: func(b *bundle) { b.smtp.SetDelay(3 * time.Second) },
			after: func(b *bundle, id string) { // the relay recovers once the first attempt timed out
				b.waitReceipt(id, ledger.ReceiptRetrying, 10*time.Second)
				b.smtp.SetDelay(0)
			},
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			b := setup(t, withMetrics(reg), withConfig(func(c *engine.Config) { c.SendTimeout = time.Second }))
			f.before(b)
			b.start()
			start := time.Now()
			id := b.dispatch(t, "accounts.password_reset")
			if f.after != nil {
				f.after(b, id)
			}
			r := b.waitReceipt(id, ledger.ReceiptSent, 20*time.Second)
			b.waitIdle()
			if r.Attempt < 2 || !r.InDoubt {
				t.Fatalf("attempt %d in_doubt %v: want a retry flagged in doubt", r.Attempt, r.InDoubt)
			}
			msgs := b.smtp.Messages()
			if len(msgs) == 0 || len(msgs) > 2 {
				t.Fatalf("%d emails for one delivery", len(msgs))
			}
			for _, m := range msgs {
				if m.MessageID != r.MessageID {
					t.Fatalf("email Message-ID %q, receipt %q", m.MessageID, r.MessageID)
				}
			}
			if n := testutil.ToFloat64(gathered(t, reg, "herald_in_doubt_total")); n < 1 {
				t.Fatal("the in-doubt attempt was not counted")
			}
			t.Logf("%d email(s), attempt %d, sent after %v", len(msgs), r.Attempt, time.Since(start).Round(100*time.Millisecond))
		})
	}
}
