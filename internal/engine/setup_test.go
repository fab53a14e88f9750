package engine_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/channels/email"
	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/redisconn"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/tasks"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// withDefaults applies herald.Config's defaults, the only ones there are, to engine settings.
func withDefaults(c engine.Config) engine.Config {
	return engine.Config(herald.Config(c).WithDefaults())
}

// dispatchID takes the id of a Dispatch's result.
func dispatchID(r engine.Result, err error) (string, error) { return r.ID, err }

var resetKey = bytes.Repeat([]byte("k"), 32)

const secretKeys = "test1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

// bundle is one test's Herald: its own database, queue, SMTP server, worker and client.
type bundle struct {
	t      testing.TB
	pool   *pgxpool.Pool
	store  *ledger.Store
	queue  string
	redis  asynq.RedisClientOpt
	smtp   *emailtest.Server
	reg    *events.Registry
	cfg    engine.Config
	deps   engine.Deps // the worker's registry is reg
	worker *engine.Worker
	client *engine.Client
	logs   *testenv.LogBuffer
	tokens *examples.Tokens
}

type option func(*bundle)

func withConfig(f func(*engine.Config)) option { return func(b *bundle) { f(&b.cfg) } }
func withRedisDB(db int) option                { return func(b *bundle) { b.redis.DB = db } }
func withEvents(evs ...events.Event) option {
	return func(b *bundle) {
		if err := b.reg.Register(evs...); err != nil {
			b.t.Fatal(err)
		}
	}
}

func setup(t testing.TB, opts ...option) *bundle {
	t.Helper()
	ctx := t.Context()
	b := &bundle{t: t, pool: testenv.DB(t), queue: testenv.Queue(t), redis: testenv.RedisOpt(t), smtp: emailtest.Start(t),
		reg: events.NewRegistry(), logs: &testenv.LogBuffer{}, tokens: &examples.Tokens{Key: resetKey}}
	b.store = ledger.New(b.pool)
	if err := examples.Migrate(ctx, b.pool); err != nil {
		t.Fatal(err)
	}
	for _, u := range []examples.User{{ID: "42", Email: "ada@example.net", Name: "Ada"}, {ID: "43", Email: "bob@example.net", Name: "Bob"}} {
		if err := examples.SeedUser(ctx, b.pool, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.reg.Register(examples.PasswordReset{Tokens: b.tokens, BaseURL: "https://app.test"}); err != nil {
		t.Fatal(err)
	}
	if err := b.reg.RegisterLoader("users", examples.UsersLoader{DB: b.pool}); err != nil {
		t.Fatal(err)
	}
	log := zerolog.New(b.logs)
	b.cfg = engine.Config{
		DB: b.pool, SecretKeys: secretKeys, Logger: &log,
		MailFrom: "Herald Test <noreply@herald.test>",
		Queue:    b.queue, Concurrency: 4,
		Lease: 20 * time.Second, TaskTimeout: 15 * time.Second, SendTimeout: 5 * time.Second, ShutdownTimeout: 8 * time.Second,
		PromoterInterval: 100 * time.Millisecond, RequeueAfter: 2 * time.Second, SweepInterval: 500 * time.Millisecond,
		BackoffMin: 200 * time.Millisecond, BackoffMax: time.Second, MissingRowDelay: 200 * time.Millisecond,
		UnknownEventFor: 2 * time.Second,
	}
	for _, o := range opts {
		o(b)
	}
	b.cfg.Redis = b.redis
	if b.cfg.Senders == nil {
		s, err := email.New(email.Config{URL: b.smtp.URL(), PoolSize: b.cfg.Concurrency, SendTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		b.cfg.Senders = map[string]channels.Sender{events.TransportEmail: s}
	}
	b.cfg = withDefaults(b.cfg)
	w, err := engine.NewWorker(b.cfg, b.workerDeps())
	if err != nil {
		t.Fatal(err)
	}
	b.worker = w
	t.Cleanup(func() { _ = w.Close() })
	c, err := engine.NewClient(engine.Config(herald.Config{Redis: b.redis, SecretKeys: secretKeys, Queue: b.queue}.WithDefaults()))
	if err != nil {
		t.Fatal(err)
	}
	b.client = c
	t.Cleanup(func() { _ = c.Close() })
	return b
}

// start runs the worker (asynq server and promoter) until the end of the test.
func (b *bundle) start() *bundle {
	b.t.Helper()
	if err := b.worker.Start(b.t.Context()); err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(b.worker.Shutdown)
	return b
}

func user(id string) []events.Ref { return []events.Ref{{Name: "user", Resource: "users", ID: id}} }

// waitFor polls cond until it holds or the deadline passes (testenv.WaitFor).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, timeout, what, cond)
}

func (b *bundle) dispatchStatus(id string) ledger.Status {
	st, _ := b.store.Status(context.Background(), ledger.KindDispatch, id)
	return st
}

func (b *bundle) waitDispatch(id string, want ledger.Status, timeout time.Duration) *ledger.DispatchRow {
	b.t.Helper()
	waitFor(b.t, timeout, "dispatch "+id+" to be "+string(want), func() bool { return b.dispatchStatus(id) == want })
	d, err := b.store.GetDispatch(context.Background(), id)
	if err != nil {
		b.t.Fatal(err)
	}
	return d
}

func (b *bundle) receipts(dispatchID string) []*ledger.ReceiptRow {
	b.t.Helper()
	rs, err := b.store.ListReceipts(context.Background(), dispatchID)
	if err != nil {
		b.t.Fatal(err)
	}
	return rs
}

func (b *bundle) waitReceipt(dispatchID string, want ledger.Status, timeout time.Duration) *ledger.ReceiptRow {
	b.t.Helper()
	var got *ledger.ReceiptRow
	waitFor(b.t, timeout, "a receipt of "+dispatchID+" to be "+string(want), func() bool {
		for _, r := range b.receipts(dispatchID) {
			if r.Status == want {
				got = r
				return true
			}
		}
		return false
	})
	return got
}

// redisContains reports the Redis keys whose name or value contains s.
func redisContains(t testing.TB, opt asynq.RedisClientOpt, s string) []string {
	t.Helper()
	rc := redisClient(opt)
	defer rc.Close()
	ctx := context.Background()
	var hits []string
	iter := rc.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		if strings.Contains(k, s) {
			hits = append(hits, k)
			continue
		}
		var vals []string
		switch rc.Type(ctx, k).Val() {
		case "string":
			vals = []string{rc.Get(ctx, k).Val()}
		case "hash":
			for f, v := range rc.HGetAll(ctx, k).Val() {
				vals = append(vals, f, v)
			}
		case "list":
			vals = rc.LRange(ctx, k, 0, -1).Val()
		case "set":
			vals = rc.SMembers(ctx, k).Val()
		case "zset":
			vals = rc.ZRange(ctx, k, 0, -1).Val()
		}
		for _, v := range vals {
			if strings.Contains(v, s) || strings.Contains(v, base64.StdEncoding.EncodeToString([]byte(s))) {
				hits = append(hits, k)
				break
			}
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return hits
}

// testEvent is a configurable event for the engine's tests.
type testEvent struct {
	id         string
	channels   []events.Channel
	mint       func(*events.Dispatch) (map[string]any, error)
	shouldSend *events.Decision
	note       string // put into every template; a sample value here must be refused
}

func (e testEvent) ID() string { return e.id }
func (e testEvent) Channels(context.Context, *events.Dispatch) ([]events.Channel, error) {
	return e.channels, nil
}
func (testEvent) Recipients(_ context.Context, d *events.Dispatch, _ events.Channel) ([]events.Recipient, error) {
	u := d.Data["user"].(examples.User)
	return []events.Recipient{{ID: u.ID, Address: u.Email, Name: u.Name}}, nil
}
func (e testEvent) SendVariables(_ context.Context, d *events.Dispatch) (map[string]any, error) {
	if e.mint == nil {
		return nil, nil
	}
	return e.mint(d)
}
func (e testEvent) ShouldSend(context.Context, *events.Dispatch, events.Channel, events.Recipient) (events.Decision, error) {
	if e.shouldSend != nil {
		return *e.shouldSend, nil
	}
	return events.Decision{Send: true}, nil
}
func (e testEvent) TemplateAssigns(context.Context, *events.Dispatch, events.Channel, events.Recipient) (map[string]any, error) {
	if e.note == "" {
		return nil, nil
	}
	return map[string]any{"note": e.note}, nil
}
func (testEvent) Templates() fs.FS {
	return fstest.MapFS{
		"email.html.tmpl": {Data: []byte(`<p>Hello {{.user.Name}} from {{.event_id}} {{.note}}</p>`)},
		"email.text.tmpl": {Data: []byte(`Hello {{.user.Name}} from {{.event_id}} {{.note}}`)},
	}
}

func redisClient(opt asynq.RedisClientOpt) redis.UniversalClient {
	rc, _ := redisconn.New(opt) // a RedisClientOpt always makes one
	return rc
}

func newEmailSender(url string) (*email.Sender, error) {
	return email.New(email.Config{URL: url, PoolSize: 1, SendTimeout: 5 * time.Second})
}

// waitIdle waits until nothing is left that could still send: no task of the test's queue in
// Redis (pending, active, scheduled or retry) and no open dispatch or delivery in Postgres.
// After it, counting emails is final — no sleep needed to look for unwanted ones.
func (b *bundle) waitIdle() {
	b.t.Helper()
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	waitFor(b.t, 30*time.Second, "the worker to go idle", func() bool {
		if q, err := insp.GetQueueInfo(b.queue); err == nil && q.Pending+q.Active+q.Scheduled+q.Retry > 0 {
			return false
		}
		var open int
		_ = b.pool.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM herald.receipts WHERE status IN ('scheduled','sending','retrying')) +
			(SELECT count(*) FROM herald.dispatches WHERE status IN ('accepted','fanning_out','retrying'))`).Scan(&open)
		return open == 0
	})
}

// dispatch dispatches event about user 42 through Redis and returns the dispatch id.
func (b *bundle) dispatch(t testing.TB, event string) string {
	t.Helper()
	id, err := dispatchID(b.client.Dispatch(t.Context(), event, user("42"), nil))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// dispatchTx records a password reset for user uid through the outbox (DispatchTx, committed)
// and returns the dispatch id.
func (b *bundle) dispatchTx(t testing.TB, uid string) string {
	t.Helper()
	ctx := t.Context()
	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.client.DispatchTx(ctx, tx, "accounts.password_reset", user(uid), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return res.ID
}

// fanOutNow runs the fan-out of dispatch id in the test's goroutine, as a promoted task would.
func (b *bundle) fanOutNow(t testing.TB, id string) {
	t.Helper()
	p, _ := json.Marshal(tasks.DispatchPayload{V: 1, DispatchID: id})
	if err := tasks.NewServeMux(b.worker).ProcessTask(t.Context(), asynq.NewTask(tasks.TypeDispatch, p)); err != nil {
		t.Fatal(err)
	}
}

// workerDeps is b.deps with the bundle's registry.
func (b *bundle) workerDeps() engine.Deps {
	d := b.deps
	d.Registry = b.reg
	return d
}

// rebuild replaces the bundle's worker with one built from b.cfg as it is now.
func (b *bundle) rebuild(t testing.TB) {
	t.Helper()
	b.cfg = withDefaults(b.cfg)
	w, err := engine.NewWorker(b.cfg, b.workerDeps())
	if err != nil {
		t.Fatal(err)
	}
	b.worker = w
	t.Cleanup(func() { _ = w.Close() })
}
