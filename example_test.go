package herald_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples/welcome"
)

// A worker of your own: register your events and loaders, then Run until a signal. (The
// complete program is examples/welcome/cmd/welcome-worker.)
func ExampleRun() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := herald.ConfigFromEnv(os.Getenv) // HERALD_REDIS_URL, HERALD_DATABASE_URL, HERALD_SMTP_URL, …
	if err != nil {
		log.Fatal(err)
	}
	pool, err := herald.OpenDB(ctx, cfg.DatabaseURL)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	cfg.DB = pool // one pool for Herald and your loaders

	reg := events.NewRegistry()
	reg.MustRegister(welcome.Welcome{})
	if err := reg.RegisterLoader("users", welcome.UsersLoader{DB: pool}); err != nil {
		log.Fatal(err)
	}
	if err := herald.Run(ctx, cfg, reg); err != nil {
		log.Fatal(err)
	}
}

// A producer dispatches through Redis only. Secrets are sealed before they leave the process;
// the idempotency key makes a retried request the same dispatch.
func ExampleClient_Dispatch() {
	ctx := context.Background()
	cfg, err := herald.ClientConfigFromEnv(os.Getenv) // HERALD_REDIS_URL, HERALD_SECRET_KEYS, HERALD_QUEUE
	if err != nil {
		log.Fatal(err)
	}
	c, err := herald.NewClient(cfg) // make one and share it
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	token, requestID := "a-token-your-app-made", "req-7f3a"
	res, err := c.Dispatch(ctx, "accounts.password_reset",
		[]events.Ref{{Name: "user", Resource: "users", ID: "42"}},
		map[string]any{"reset_token": events.NewSecret(token)},
		herald.IdempotencyKey("reset:42:"+requestID), herald.Actor("user:42"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("dispatch", res.ID) // for `enqueue status`; a worker answers idempotency later
}

// The outbox: the dispatch is written in your own transaction, beside the row it is about, and
// exists if and only if you commit. The commit NOTIFYs the workers' promoters, which enqueue it
// at once. Idempotency is answered here (res.Checked): a duplicate returns the first dispatch's
// ID with res.Duplicate set.
func ExampleClient_DispatchTx() {
	ctx := context.Background()
	cfg, err := herald.ClientConfigFromEnv(os.Getenv) // no Redis needed for DispatchTx
	if err != nil {
		log.Fatal(err)
	}
	c, err := herald.NewClient(cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	pool, err := herald.OpenDB(ctx, cfg.DatabaseURL) // your rows and the herald schema, one database
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }() // a no-op after Commit
	userID := "43"
	if _, err := tx.Exec(ctx, `INSERT INTO herald_example.users (id, email, name) VALUES ($1, $2, $3)`,
		userID, "grace@example.net", "Grace Hopper"); err != nil {
		log.Fatal(err)
	}
	res, err := c.DispatchTx(ctx, tx, "accounts.welcome",
		[]events.Ref{{Name: "user", Resource: "users", ID: userID}}, nil,
		herald.IdempotencyKey("welcome:"+userID))
	if err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("dispatch", res.ID, "duplicate:", res.Duplicate)
}

// Herald on an asynq server of your own, beside your own tasks: its handler, the hooks it needs
// on your asynq.Config, and its maintenance. Close it after the server's Shutdown.
func ExampleMount() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := herald.ConfigFromEnv(os.Getenv)
	if err != nil {
		log.Fatal(err)
	}
	reg := events.NewRegistry()
	reg.MustRegister(welcome.Welcome{}) // and its loader, as in ExampleRun
	m, err := herald.Mount(ctx, cfg, reg)
	if err != nil {
		log.Fatal(err)
	}

	redisOpt, err := asynq.ParseRedisURI(cfg.RedisURL)
	if err != nil {
		log.Fatal(err)
	}
	asynqCfg := asynq.Config{Concurrency: 20, Queues: map[string]int{"default": 1, cfg.Queue: 1}}
	m.Configure(&asynqCfg) // Herald's retry delays, failure rule and error handler for its tasks
	mux := asynq.NewServeMux()
	mux.HandleFunc("app:report", func(context.Context, *asynq.Task) error { return nil }) // yours
	mux.Handle(herald.TaskPrefix, m.Handler)
	srv := asynq.NewServer(redisOpt, asynqCfg)
	if err := srv.Start(mux); err != nil {
		log.Fatal(err)
	}

	maintained := make(chan struct{})
	go func() { defer close(maintained); m.RunMaintenance(ctx) }() // promoter and sweeper
	<-ctx.Done()
	<-maintained
	srv.Shutdown()
	m.Close() // after Shutdown: waits for Herald's handlers still running
}

// A zero Config takes the default written beside each field.
func ExampleConfig_WithDefaults() {
	cfg := herald.Config{Concurrency: 32}.WithDefaults()
	fmt.Println(cfg.Queue, cfg.Concurrency, cfg.HTTPAddr)
	fmt.Println(cfg.SendTimeout, cfg.TaskTimeout, cfg.Lease, cfg.ShutdownTimeout)
	fmt.Println(cfg.MaxAttempts, cfg.BackoffMin, cfg.BackoffMax, cfg.IdempotencyWindow)
	fmt.Println(cfg.Migrate, cfg.Horizon, cfg.PromoterInterval)
	// Output:
	// herald 32 :8080
	// 30s 1m0s 2m0s 40s
	// 10 5s 10m0s 24h0m0s
	// auto 1m0s 1s
}

// The manual actions: list the events, preview one with its sample data and for a real record
// (neither mints nor writes), then send it and follow its receipts.
func ExampleAdmin() {
	ctx := context.Background()
	cfg, err := herald.ConfigFromEnv(os.Getenv)
	if err != nil {
		log.Fatal(err)
	}
	pool, err := herald.OpenDB(ctx, cfg.DatabaseURL)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	cfg.DB = pool
	reg := events.NewRegistry()
	reg.MustRegister(welcome.Welcome{})
	if err := reg.RegisterLoader("users", welcome.UsersLoader{DB: pool}); err != nil {
		log.Fatal(err)
	}
	admin, err := herald.NewAdmin(ctx, cfg, reg)
	if err != nil {
		log.Fatal(err)
	}
	defer admin.Close()

	for _, ev := range admin.Events(ctx) {
		fmt.Println(ev.ID, ev.Domain, ev.Category, "previewable:", ev.Previewable)
	}
	user := []events.Ref{{Name: "user", Resource: "users", ID: "42"}}
	preview, err := admin.PreviewFor(ctx, "accounts.welcome", user, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range preview {
		fmt.Println(p.Channel.Key, p.Recipient.Address, p.Status, p.DueAt, p.Subject)
	}
	sent, err := admin.Trigger(ctx, "accounts.welcome", user, nil, herald.Actor("admin:ada"))
	if err != nil {
		log.Fatal(err) // a SendVariables error, a missing record: nothing was sent
	}
	for _, r := range sent.Receipts {
		fmt.Println(r.ID, r.ChannelKey, r.Recipient.Address, r.Status, r.DueAt)
	}
}
