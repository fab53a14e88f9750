package engine_test

// Regression tests for defects a review proved in the chunked fan-out and the recorder.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
)

// TestYieldedFanOutResumes: a first-attempt fan-out that yields its time slice resumes where it
// stopped in the next slice (it used to start over each time and never finish).
func TestYieldedFanOutResumes(t *testing.T) {
	t.Parallel()
	ev := crowd{n: 10_000, delay: 400 * time.Millisecond, starts: &atomic.Int32{}, mints: &atomic.Int32{}, failed: &atomic.Bool{}}
	b := setup(t, withEvents(ev), withConfig(func(c *engine.Config) {
		c.FanoutChunk = 1000
		c.Lease, c.TaskTimeout, c.SendTimeout = 4*time.Second, 2*time.Second, time.Second // 1s slices
	})).start()
	id, err := dispatchID(b.client.Dispatch(t.Context(), "test.crowd", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	d := b.waitDispatch(id, ledger.DispatchFannedOut, 30*time.Second) // 4s of work
	if n := b.countReceipts(id); n != ev.n {
		t.Fatalf("%d receipts for %d recipients", n, ev.n)
	}
	if s := ev.starts.Load(); s != 1 || d.Attempt != 1 {
		t.Fatalf("the recipients were read from the start %d times, attempt %d: want once, attempt 1", s, d.Attempt)
	}
}

// shrinking: 10 recipients; from the second call on r0 is gone (unsubscribed). ShouldSend fails
// once on r4, so the fan-out resumes in a second attempt.
type shrinking struct{ calls, failed *atomic.Int32 }

func (shrinking) ID() string { return "test.shrinking" }
func (shrinking) Channels(context.Context, *events.Dispatch) ([]events.Channel, error) {
	return []events.Channel{{Key: "news", Transport: "email", Time: events.In(time.Hour)}}, nil
}
func (s shrinking) Recipients(context.Context, *events.Dispatch, events.Channel) ([]events.Recipient, error) {
	from := 0
	if s.calls.Add(1) > 1 {
		from = 1
	}
	var rs []events.Recipient
	for i := from; i < 10; i++ {
		rs = append(rs, events.Recipient{ID: fmt.Sprintf("r%d", i), Address: fmt.Sprintf("r%d@x.example", i)})
	}
	return rs, nil
}
func (s shrinking) ShouldSend(_ context.Context, _ *events.Dispatch, _ events.Channel, rc events.Recipient) (events.Decision, error) {
	if rc.ID == "r4" && s.failed.Add(1) == 1 {
		return events.Decision{}, errors.New("preference service timed out")
	}
	return events.Decision{Send: true}, nil
}
func (shrinking) Templates() fs.FS { return fstest.MapFS{"email.text.tmpl": {Data: []byte(`x`)}} }

// TestResumeNoticesAChangedRecipientList: a resumed fan-out of a plain Recipients list that
// changed in between skips nobody (it used to resume by offset into the new list).
func TestResumeNoticesAChangedRecipientList(t *testing.T) {
	t.Parallel()
	ev := shrinking{calls: &atomic.Int32{}, failed: &atomic.Int32{}}
	b := setup(t, withEvents(ev), withConfig(func(c *engine.Config) { c.FanoutChunk = 3 })).start()
	id, err := dispatchID(b.client.Dispatch(t.Context(), "test.shrinking", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	d := b.waitDispatch(id, ledger.DispatchFannedOut, 30*time.Second)
	var got []string
	for _, r := range b.receipts(id) {
		got = append(got, r.RecipientID)
	}
	sort.Strings(got)
	if d.Attempt < 2 || strings.Join(got, ",") != "r0,r1,r2,r3,r4,r5,r6,r7,r8,r9" {
		t.Fatalf("attempt %d, receipts %v: want a resumed fan-out with every recipient", d.Attempt, got)
	}
}

// plainEvent: one recipient, no SendVariables (the chunk's insert is its transaction's first
// write).
type plainEvent struct{}

func (plainEvent) ID() string { return "test.plain" }
func (plainEvent) Channels(context.Context, *events.Dispatch) ([]events.Channel, error) {
	return []events.Channel{{Key: "email", Transport: "email"}}, nil
}
func (plainEvent) Recipients(context.Context, *events.Dispatch, events.Channel) ([]events.Recipient, error) {
	return []events.Recipient{{ID: "1", Address: "p@example.net"}}, nil
}
func (plainEvent) Templates() fs.FS { return fstest.MapFS{"email.text.tmpl": {Data: []byte(`hi`)}} }

// TestSlowStatementIsNotAnOutage: a statement slower than the recorder's per-try deadline, while
// PostgreSQL answers, is not "PostgreSQL unreachable": it is not retried forever, the dispatch
// ends with a record, and Shutdown returns.
func TestSlowStatementIsNotAnOutage(t *testing.T) {
	t.Parallel()
	b := setup(t, withEvents(plainEvent{}), withConfig(func(c *engine.Config) {
		c.Lease, c.TaskTimeout, c.SendTimeout, c.ShutdownTimeout = 4*time.Second, 2*time.Second, time.Second, 2*time.Second
		c.MaxAttempts = 2
	}))
	ctx := context.Background()
	if _, err := b.pool.Exec(ctx, `CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(6); RETURN NULL; END $$;
		CREATE TRIGGER slow BEFORE INSERT ON herald.receipts FOR EACH STATEMENT EXECUTE FUNCTION slow()`); err != nil {
		t.Fatal(err)
	}
	if err := b.worker.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	id := b.dispatch(t, "test.plain")
	b.waitDispatch(id, ledger.DispatchFailed, 90*time.Second)
	if strings.Contains(b.logs.String(), "PostgreSQL is unreachable") {
		t.Fatal("a slow statement was reported as PostgreSQL being unreachable")
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() { b.worker.Shutdown(); close(done) })
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Shutdown has not returned after 30s although PostgreSQL answered all along")
	}
	wg.Wait()
}

// subjEvent is testEvent with a fixed subject.
type subjEvent struct {
	testEvent
	subj string
}

func (e subjEvent) Subject(context.Context, *events.Dispatch, events.Channel, events.Recipient) (string, error) {
	return e.subj, nil
}

// TestConfirmedSendWithUnstorableText: a relay reply or a subject PostgreSQL cannot store
// (invalid UTF-8, NUL) must not keep a confirmed send from being recorded (it used to fail the
// final update, be reclaimed and be sent again on every attempt).
func TestConfirmedSendWithUnstorableText(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		reply, subject string
	}{
		"reply":   {reply: "250 2.0.0 Ok: queued as caf\xe9\x00", subject: "Hello"},
		"subject": {reply: "250 ok", subject: "Caf\xc3 \x00"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := &scriptSender{answer: func(int, channels.Message) (channels.Result, error) {
				return channels.Result{ProviderResponse: c.reply}, nil
			}}
			ev := subjEvent{testEvent: testEvent{id: "test.subj", channels: []events.Channel{{Key: "email", Transport: "email"}}}, subj: c.subject}
			b := setup(t, withSender(s), withEvents(ev), withConfig(func(c *engine.Config) {
				c.Lease, c.TaskTimeout, c.SendTimeout, c.ShutdownTimeout = 3*time.Second, 2*time.Second, time.Second, 2*time.Second
			})).start()
			id := b.dispatch(t, "test.subj")
			r := b.waitReceipt(id, ledger.ReceiptSent, 15*time.Second)
			b.waitIdle()
			if n := len(s.sent()); n != 1 || r.Attempt != 1 || r.InDoubt {
				t.Fatalf("%d sends, attempt %d, in_doubt %v: want one send recorded at once", n, r.Attempt, r.InDoubt)
			}
		})
	}
}

// TestEscapedSecretsAreRedacted: an error that quotes or escapes a secret does not carry it into
// the record or the log.
func TestEscapedSecretsAreRedacted(t *testing.T) {
	t.Parallel()
	const secret = `s3cr"et/välue&x`
	ev := testEvent{id: "test.leaky", channels: []events.Channel{{Key: "email", Transport: "email"}}}
	b := setup(t, withEvents(leaky{ev}), withConfig(func(c *engine.Config) { c.MaxAttempts = 1 })).start()
	id, err := dispatchID(b.client.Dispatch(t.Context(), "test.leaky", user("42"), map[string]any{"api_key": events.NewSecret(secret)}))
	if err != nil {
		t.Fatal(err)
	}
	d := b.waitDispatch(id, ledger.DispatchFailed, 10*time.Second)
	for _, form := range []string{secret, strconv.Quote(secret), `s3cr\"et`, "s3cr%22et", `s3cr\u0022et`} {
		if strings.Contains(d.LastError, form) || strings.Contains(b.logs.String(), form) {
			t.Fatalf("the secret (as %s) reached the record or the log: %q", form, d.LastError)
		}
	}
}

// leaky is an event whose Recipients fails with an error quoting a secret in several forms.
type leaky struct{ testEvent }

func (l leaky) Recipients(_ context.Context, d *events.Dispatch, _ events.Channel) ([]events.Recipient, error) {
	s, _ := d.Vars["api_key"].(events.Secret)
	v := s.Reveal()
	j, _ := json.Marshal(v)
	return nil, fmt.Errorf("lookup with key %q failed; body %s; url ?k=%s", v, j, url.QueryEscape(v))
}

// TestForgedPayloadFieldsEndWithARecord: a dispatch accepted "in the future" (a producer clock
// ahead, or a forged payload) is sent now, and a sealed secret no key can open fails the
// dispatch at once instead of after every attempt.
func TestForgedPayloadFieldsEndWithARecord(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	c := asynq.NewClient(b.redis)
	defer c.Close()
	enqueue := func(id, extra string) {
		raw := `{"v":1,"dispatch_id":"` + id + `","event_id":"accounts.password_reset",` +
			`"refs":[{"name":"user","resource":"users","id":"42"}]` + extra + `}`
		if _, err := c.Enqueue(asynq.NewTask(tasks.TypeDispatch, []byte(raw)), asynq.Queue(b.queue),
			asynq.TaskID(tasks.DispatchTaskID(id, 0))); err != nil {
			t.Fatal(err)
		}
	}
	future, forged := "0193a0c4-0000-7000-8000-0000000000f1", "0193a0c4-0000-7000-8000-0000000000f2"
	enqueue(future, `,"accepted_at":"9999-12-31T23:59:59Z"`)
	enqueue(forged, `,"secrets":{"tok":"notsealed"},"accepted_at":"2026-11-28T10:00:00Z"`)
	b.waitReceipt(future, ledger.ReceiptSent, 15*time.Second)
	d := b.waitDispatch(forged, ledger.DispatchFailed, 15*time.Second)
	if d.Attempt != 1 || !strings.Contains(d.LastError, "cannot be opened") {
		t.Fatalf("attempt %d %q: want the first attempt to fail for good", d.Attempt, d.LastError)
	}
}
