package engine_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/ledger/ledgertest"
	"github.com/heraldhq/herald/tasks"
)

// scriptSender is a transport whose answers a test scripts; it records every message it was
// asked to send.
type scriptSender struct {
	mu     sync.Mutex
	msgs   []channels.Message
	answer func(n int, m channels.Message) (channels.Result, error) // n counts calls from 1
}

func (s *scriptSender) Send(_ context.Context, m channels.Message) (channels.Result, error) {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	n := len(s.msgs)
	s.mu.Unlock()
	if s.answer == nil {
		return channels.Result{ProviderResponse: "250 ok"}, nil
	}
	return s.answer(n, m)
}

func (s *scriptSender) sent() []channels.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]channels.Message(nil), s.msgs...)
}

func withSender(s channels.Sender) option {
	return withConfig(func(c *engine.Config) { c.Senders = map[string]channels.Sender{events.TransportEmail: s} })
}

func withMetrics(reg *prometheus.Registry) option {
	return func(b *bundle) { b.deps.Metrics = reg }
}

// TestInDoubtReclaimsCountedOnce: after one real reclaim the receipt stays in_doubt, but the
// ordinary retries that follow are neither counted nor logged as reclaims again (issue 6, item 4).
func TestInDoubtReclaimsCountedOnce(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	b := setup(t, withMetrics(reg), withConfig(func(c *engine.Config) { c.DisableInline = true }))
	ctx := t.Context()
	id := b.dispatchTx(t, "42")
	b.fanOutNow(t, id)
	r := b.receipts(id)[0]
	if _, _, err := b.store.ClaimReceipt(ctx, r.ID, time.Minute); err != nil { // the worker that crashed
		t.Fatal(err)
	}
	if err := ledgertest.ExpireLease(ctx, b.pool, r.ID); err != nil {
		t.Fatal(err)
	}
	// The reclaim meets two ordinary temporary failures before it is sent.
	b.smtp.FailNext(emailtest.Reply(451, "4.3.0", "try again later"), emailtest.Reply(451, "4.3.0", "try again later"))
	b.start()
	got := b.waitReceipt(id, ledger.ReceiptSent, 15*time.Second)
	if got.Attempt != 4 || !got.InDoubt {
		t.Fatalf("attempt %d in_doubt %v, want the 4th attempt sent and the receipt in doubt", got.Attempt, got.InDoubt)
	}
	if n := testutil.ToFloat64(gathered(t, reg, "herald_in_doubt_reclaims_total")); n != 1 {
		t.Fatalf("herald_in_doubt_reclaims_total = %v after one reclaim and two ordinary retries, want 1", n)
	}
	if n := strings.Count(b.logs.String(), "may have sent (in doubt)"); n != 1 {
		t.Fatalf("the reclaim was logged %d times, want once", n)
	}
}

// countersBy reads the counter series registered under name by the value of label; a value with
// no series is missing from the map.
func countersBy(t testing.TB, reg *prometheus.Registry, name, label string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// gathered returns the sum of the series registered under name, as a collector for
// testutil.ToFloat64.
func gathered(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return collectorFunc(func(ch chan<- prometheus.Metric) {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		v := 0.0 // a series not (yet) registered reads as 0
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(name, "", nil, nil), prometheus.UntypedValue, v)
	})
}

type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(chan<- *prometheus.Desc)    {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

// TestLostReplyAfterDataIsInDoubt: a reply lost after the final "." is retried with the same
// Message-ID, and the receipt is flagged in doubt and counted (issue 6, item 3).
func TestLostReplyAfterDataIsInDoubt(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	s := &scriptSender{answer: func(n int, _ channels.Message) (channels.Result, error) {
		if n == 1 {
			return channels.Result{}, &channels.Error{Class: channels.Temporary, InDoubt: true, Err: errors.New("read reply to DATA: i/o timeout")}
		}
		return channels.Result{ProviderResponse: "250 queued"}, nil
	}}
	b := setup(t, withSender(s), withMetrics(reg)).start()
	id := b.dispatch(t, "accounts.password_reset")
	r := b.waitReceipt(id, ledger.ReceiptSent, 10*time.Second)
	if r.Attempt != 2 || !r.InDoubt {
		t.Fatalf("attempt %d in_doubt %v: want the retry sent and the receipt in doubt", r.Attempt, r.InDoubt)
	}
	msgs := s.sent()
	if len(msgs) != 2 || msgs[0].MessageID != msgs[1].MessageID || msgs[0].MessageID == "" {
		t.Fatalf("%d sends, Message-IDs %q: want two with the same Message-ID", len(msgs), ids(msgs))
	}
	if n := testutil.ToFloat64(gathered(t, reg, "herald_in_doubt_total")); n != 1 {
		t.Fatalf("herald_in_doubt_total = %v, want 1", n)
	}
}

func ids(msgs []channels.Message) []string {
	var out []string
	for _, m := range msgs {
		out = append(out, m.MessageID)
	}
	return out
}

// TestShutdownWaitsForRunningSends: a transport that overruns the shutdown timeout (ignoring its
// context) still has its confirmed outcome recorded before Shutdown returns (issue 6, item 2).
func TestShutdownWaitsForRunningSends(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	var once sync.Once
	s := &scriptSender{answer: func(int, channels.Message) (channels.Result, error) {
		once.Do(func() { close(started) })
		time.Sleep(2500 * time.Millisecond) // a misbehaving transport: it ignores ctx
		return channels.Result{ProviderResponse: "250 ok"}, nil
	}}
	b := setup(t, withSender(s), withConfig(func(c *engine.Config) {
		c.SendTimeout, c.ShutdownTimeout = 500*time.Millisecond, time.Second
	}))
	if err := b.worker.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	id := b.dispatch(t, "accounts.password_reset")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the send never started")
	}
	b.worker.Shutdown()
	rs := b.receipts(id)
	if len(rs) != 1 || rs[0].Status != ledger.ReceiptSent {
		t.Fatalf("after Shutdown returned: %+v, want the confirmed send recorded", rs)
	}
}

// TestConfigAlertRaisedOnce: a transport that refuses our configuration is reported once at
// error level, not once per delivery, and ordinary retries never log at error level.
func TestConfigAlertRaisedOnce(t *testing.T) {
	t.Parallel()
	var refuse sync.Mutex
	refusing := true
	s := &scriptSender{answer: func(int, channels.Message) (channels.Result, error) {
		refuse.Lock()
		defer refuse.Unlock()
		if refusing {
			return channels.Result{}, &channels.Error{Class: channels.Temporary, Code: 535, ConfigAlert: true, Err: errors.New("535 authentication failed")}
		}
		return channels.Result{}, nil
	}}
	b := setup(t, withSender(s)).start()
	a, c := b.dispatch(t, "accounts.password_reset"), b.dispatch(t, "accounts.password_reset")
	waitFor(t, 10*time.Second, "both deliveries to be retried", func() bool {
		n := 0
		for _, id := range []string{a, c} {
			for _, r := range b.receipts(id) {
				if r.Attempt >= 2 {
					n++
				}
			}
		}
		return n == 2
	})
	refuse.Lock()
	refusing = false
	refuse.Unlock()
	b.waitReceipt(a, ledger.ReceiptSent, 10*time.Second)
	b.waitReceipt(c, ledger.ReceiptSent, 10*time.Second)
	logs := b.logs.String()
	if n := strings.Count(logs, `"alert":"transport_configuration"`); n != 1 {
		t.Fatalf("configuration alert logged %d times for 2 deliveries of ≥2 attempts each, want once", n)
	}
	if n := strings.Count(logs, `"level":"error"`); n != 1 {
		t.Fatalf("%d error-level lines, want only the alert:\n%s", n, logs)
	}
}

// TestRetriesDoNotLogErrors: an ordinary temporary failure is not an error-level event (issue 6,
// item 21): asynq's ErrorHandler sees every RevokeTask, which is a normal end.
func TestRetriesDoNotLogErrors(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	b.smtp.FailNext(emailtest.Reply(451, "4.3.0", "try again later"))
	id := b.dispatch(t, "accounts.password_reset")
	b.waitReceipt(id, ledger.ReceiptSent, 10*time.Second)
	b.waitIdle()
	if logs := b.logs.String(); strings.Contains(logs, `"level":"error"`) {
		t.Fatalf("an ordinary retry logged at error level:\n%s", logs)
	}
}

// panicky is the password reset event with one of its hooks panicking with a secret in the
// panic value.
type panicky struct {
	examples.PasswordReset
	where string
}

const panicSecret = "sup3r-s3cret-in-a-panic"

func (p panicky) boom(where string) {
	if p.where == where {
		panic("boom in " + where + ": " + panicSecret)
	}
}

func (p panicky) Channels(ctx context.Context, d *events.Dispatch) ([]events.Channel, error) {
	p.boom("channels")
	return p.PasswordReset.Channels(ctx, d)
}

func (p panicky) Recipients(ctx context.Context, d *events.Dispatch, ch events.Channel) ([]events.Recipient, error) {
	p.boom("recipients")
	return p.PasswordReset.Recipients(ctx, d, ch)
}

func (p panicky) SendVariables(ctx context.Context, d *events.Dispatch) (map[string]any, error) {
	p.boom("send_variables")
	return p.PasswordReset.SendVariables(ctx, d)
}

func (p panicky) Subject(ctx context.Context, d *events.Dispatch, ch events.Channel, r events.Recipient) (string, error) {
	p.boom("subject") // called at delivery only
	return p.PasswordReset.Subject(ctx, d, ch, r)
}

// TestPanicsAreBoundedAndRedacted: a panic in event or loader code is an ordinary failure with a
// redacted reason, attempts stay bounded, and the secret reaches neither PostgreSQL nor Redis
// (issue 6, item 7).
func TestPanicsAreBoundedAndRedacted(t *testing.T) {
	t.Parallel()
	for _, where := range []string{"channels", "recipients", "send_variables", "loader", "subject"} {
		t.Run(where, func(t *testing.T) {
			t.Parallel()
			b := setup(t, withConfig(func(c *engine.Config) { c.MaxAttempts = 2 }))
			b.reg = events.NewRegistry()
			ev := panicky{PasswordReset: examples.PasswordReset{Tokens: b.tokens, BaseURL: "https://app.test"}, where: where}
			b.reg.MustRegister(ev)
			_ = b.reg.RegisterLoader("users", events.LoaderFunc(func(ctx context.Context, ref events.Ref) (any, error) {
				if where == "loader" {
					panic("boom in loader: " + panicSecret)
				}
				return examples.UsersLoader{DB: b.pool}.Load(ctx, ref)
			}))
			b.rebuild(t)
			b.start()
			id, err := dispatchID(b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), map[string]any{"note": events.NewSecret(panicSecret)}))
			if err != nil {
				t.Fatal(err)
			}
			var lastError string
			var attempt int
			if where == "subject" {
				r := b.waitReceipt(id, ledger.ReceiptFailed, 20*time.Second)
				lastError, attempt = r.LastError, r.Attempt
			} else {
				d := b.waitDispatch(id, ledger.DispatchFailed, 20*time.Second)
				lastError, attempt = d.LastError, d.Attempt
			}
			if attempt > 2 || !strings.Contains(lastError, "panic") {
				t.Fatalf("attempt %d, last error %q: want at most 2 attempts and the panic named", attempt, lastError)
			}
			if strings.Contains(lastError, panicSecret) || strings.Contains(b.logs.String(), panicSecret) {
				t.Fatalf("the secret in the panic value reached the receipt or the logs: %q", lastError)
			}
			if hits := redisContains(t, b.redis, panicSecret); len(hits) > 0 {
				t.Fatalf("the secret reached Redis: %v", hits)
			}
		})
	}
}

// TestReclaimsAreBounded: a delivery whose attempts keep dying (claimed, never finished) stops
// at its maximum attempts instead of being reclaimed forever (issue 6, item 7).
func TestReclaimsAreBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *engine.Config) { c.DisableInline = true; c.MaxAttempts = 2 }))
	ctx := t.Context()
	id := b.dispatchTx(t, "42")
	b.fanOutNow(t, id)
	r := b.receipts(id)[0]
	for range 2 { // two attempts that died mid-send
		if _, out, err := b.store.ClaimReceipt(ctx, r.ID, time.Minute); err != nil || out != ledger.Claimed {
			t.Fatalf("claim: %v %v", out, err)
		}
		if err := ledgertest.ExpireLease(ctx, b.pool, r.ID); err != nil {
			t.Fatal(err)
		}
	}
	b.start()
	got := b.waitReceipt(id, ledger.ReceiptFailed, 10*time.Second)
	if got.Attempt != 3 || !got.InDoubt || !strings.Contains(got.LastError, "gave up after 2 attempts") {
		t.Fatalf("attempt %d in_doubt %v %q", got.Attempt, got.InDoubt, got.LastError)
	}
	b.waitIdle()
	if n := len(b.smtp.Messages()); n != 0 {
		t.Fatalf("%d emails sent past the attempt ceiling", n)
	}
}

// TestFanOutReclaimsAreBounded: the same ceiling holds for a fan-out that keeps dying.
func TestFanOutReclaimsAreBounded(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *engine.Config) { c.MaxAttempts = 2 }))
	ctx := t.Context()
	id := b.dispatchTx(t, "42")
	for range 2 { // two fan-outs that died
		if _, out, err := b.store.ClaimDispatch(ctx, id, time.Minute); err != nil || out != ledger.Claimed {
			t.Fatalf("claim: %v %v", out, err)
		}
		if _, err := b.pool.Exec(ctx, `UPDATE herald.dispatches SET lease_until = now() - interval '1 second' WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}
	b.start()
	d := b.waitDispatch(id, ledger.DispatchFailed, 10*time.Second)
	if d.Attempt != 3 || !strings.Contains(d.LastError, "gave up after 2 fan-out attempts") {
		t.Fatalf("attempt %d %q", d.Attempt, d.LastError)
	}
}

// TestClientRefusesWhatPostgresCannotStore: NUL characters and invalid UTF-8 are refused at the
// call, with a clear error, instead of being lost in the queue (issue 6, item 5).
func TestClientRefusesWhatPostgresCannotStore(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cases := map[string]struct {
		refs []events.Ref
		vars map[string]any
		opts []engine.Option
	}{
		"NUL in a variable":        {refs: user("42"), vars: map[string]any{"note": "a\x00b"}},
		"NUL in a nested variable": {refs: user("42"), vars: map[string]any{"obj": map[string]any{"k": []any{"x\x00"}}}},
		"NUL in a variable name":   {refs: user("42"), vars: map[string]any{"a\x00b": 1}},
		"NUL in a reference id":    {refs: []events.Ref{{Name: "user", Resource: "users", ID: "4\x002"}}},
		"bad UTF-8 in a ref id":    {refs: []events.Ref{{Name: "user", Resource: "users", ID: "4\xff2"}}},
		"NUL in the key":           {refs: user("42"), opts: []engine.Option{engine.IdempotencyKey("k\x00")}},
		"NUL in the actor":         {refs: user("42"), opts: []engine.Option{engine.Actor("a\x00")}},
		"bad UTF-8 in a variable":  {refs: user("42"), vars: map[string]any{"note": "caf\xe9"}},
		"bad UTF-8 nested":         {refs: user("42"), vars: map[string]any{"o": map[string]any{"l": []any{"x\xff"}}}},
		"NUL in a secret's name":   {refs: user("42"), vars: map[string]any{"t\x00k": events.NewSecret("value")}},
	}
	for name, c := range cases {
		_, err := dispatchID(b.client.Dispatch(t.Context(), "accounts.password_reset", c.refs, c.vars, c.opts...))
		if !errors.Is(err, engine.ErrInvalidDispatch) {
			t.Errorf("%s: Dispatch returned %v, want ErrInvalidDispatch", name, err)
		}
		tx, _ := b.pool.Begin(t.Context())
		_, err = b.client.DispatchTx(t.Context(), tx, "accounts.password_reset", c.refs, c.vars, c.opts...)
		_ = tx.Rollback(t.Context())
		if !errors.Is(err, engine.ErrInvalidDispatch) {
			t.Errorf("%s: DispatchTx returned %v, want ErrInvalidDispatch", name, err)
		}
	}
}

// TestRefusedDataOnFirstSightIsRecorded: a payload the client did not check (another producer)
// that PostgreSQL refuses becomes a durable rejected-task record at once, not an archived task
// after asynq's retries (issue 6, item 5).
func TestRefusedDataOnFirstSightIsRecorded(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	id := "0193a0c4-0000-7000-8000-000000000001"
	raw := `{"v":1,"dispatch_id":"` + id + `","event_id":"accounts.password_reset",` +
		`"refs":[{"name":"user","resource":"users","id":"42"}],"vars":{"note":"a\u0000b"},"accepted_at":"2026-11-28T10:00:00Z"}`
	c := asynq.NewClient(b.redis)
	defer c.Close()
	if _, err := c.Enqueue(asynq.NewTask(tasks.TypeDispatch, []byte(raw)), asynq.Queue(b.queue), asynq.MaxRetry(8),
		asynq.TaskID(tasks.DispatchTaskID(id, 0))); err != nil {
		t.Fatal(err)
	}
	var rejected []ledger.RejectedTask
	waitFor(t, 10*time.Second, "a rejected-task record", func() bool {
		rejected, _ = b.store.ListRejectedTasks(context.Background(), 10)
		return len(rejected) == 1
	})
	if r := rejected[0]; !strings.Contains(r.Reason, "22P05") || r.TaskID != tasks.DispatchTaskID(id, 0) {
		t.Fatalf("rejected %+v", r)
	}
	b.waitIdle()
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	if q, err := insp.GetQueueInfo(b.queue); err == nil && q.Archived+q.Retry > 0 {
		t.Fatalf("the task is still in asynq: %d archived, %d retrying", q.Archived, q.Retry)
	}
}
