package herald_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/receipts"
)

// TestMountOnTheApplicationsServer: Herald mounted on an asynq server of the application's own,
// beside a task type of the application's. A DispatchTx reaches the queue only through the
// maintenance runner's promoter, and its email is sent; the application's own task keeps its own
// error handler and retry delay, while Herald's hooks answer for Herald's tasks.
func TestMountOnTheApplicationsServer(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dbURL := testenv.DatabaseURL(t)
	queue := testenv.Queue(t)
	smtp := emailtest.Start(t)
	pool, err := herald.OpenDB(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	reg := exampleRegistry(t, pool)
	redisOpt := testenv.RedisOpt(t)
	cfg := herald.Config{Redis: redisOpt, DB: pool, SMTPURL: smtp.URL(), MailFrom: "Herald <noreply@herald.test>",
		SecretKeys: keys, Queue: queue, PromoterInterval: 100 * time.Millisecond, LogOutput: &testenv.LogBuffer{}}
	m, err := herald.Mount(ctx, cfg, reg)
	if err != nil {
		t.Fatal(err)
	}

	var ownErrors atomic.Int32
	appErr := errors.New("the application's task failed")
	appQueues := map[string]int{"app_" + queue: 2}
	t.Cleanup(func() { testenv.DropQueue(redisOpt, "app_"+queue) })
	acfg := asynq.Config{Concurrency: 2, TaskCheckInterval: 50 * time.Millisecond, Queues: appQueues,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return 7 * time.Minute },
		ErrorHandler: asynq.ErrorHandlerFunc(func(_ context.Context, _ *asynq.Task, err error) {
			if errors.Is(err, appErr) {
				ownErrors.Add(1)
			}
		})}
	m.Configure(&acfg)
	if acfg.Queues[queue] != 1 || acfg.Queues["app_"+queue] != 2 || len(appQueues) != 1 {
		t.Fatalf("Configure gave the server queues %v (the application's map now %v), want the application's and Herald's %q",
			acfg.Queues, appQueues, queue)
	}
	if d := acfg.RetryDelayFunc(1, appErr, asynq.NewTask("app:ping", nil)); d != 7*time.Minute {
		t.Fatalf("the application's task takes retry delay %v, want its own 7m", d)
	}
	if !acfg.IsFailure(appErr) {
		t.Fatal("the application's error is no longer a failure")
	}
	// asynq cancels running handlers ShutdownTimeout after Shutdown (8 s when unset): Herald's
	// sends need its own ShutdownTimeout (above SendTimeout), or a send in flight is cut off.
	if acfg.ShutdownTimeout < 40*time.Second {
		t.Fatalf("Configure left the server's ShutdownTimeout at %v, below Herald's 40s", acfg.ShutdownTimeout)
	}
	mux := asynq.NewServeMux()
	mux.Handle(herald.TaskPrefix, m.Handler)
	mux.HandleFunc("app:ping", func(context.Context, *asynq.Task) error { return appErr })
	srv := asynq.NewServer(redisOpt, acfg)
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	maintained := make(chan struct{})
	go func() { defer close(maintained); m.RunMaintenance(mctx) }()
	defer func() {
		stop()
		<-maintained
		srv.Shutdown()
		m.Close()
	}()

	client, err := herald.NewClient(herald.Config{SecretKeys: keys, Queue: queue, DisableOutboxNotify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var res herald.DispatchResult
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		res, err = client.DispatchTx(ctx, tx, "accounts.password_reset", []events.Ref{{Name: "user", Resource: "users", ID: "42"}}, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !res.Checked || res.Duplicate || res.ID == "" {
		t.Fatalf("DispatchTx result %+v", res)
	}
	msg := smtp.WaitFor(t, 1, 15*time.Second)[0]
	if !strings.Contains(msg.Text, "https://app.test/reset-password?token=") {
		t.Fatalf("text %q", msg.Text)
	}
	testenv.WaitFor(t, 5*time.Second, "the receipt is sent", func() bool {
		rs, err := receipts.NewReader(pool).ReceiptsOf(ctx, res.ID)
		return err == nil && len(rs) == 1 && rs[0].Status == receipts.ReceiptSent
	})

	ac := asynq.NewClient(redisOpt)
	defer ac.Close()
	if _, err := ac.Enqueue(asynq.NewTask("app:ping", nil), asynq.Queue("app_"+queue), asynq.MaxRetry(1)); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, 10*time.Second, "the application's error handler sees its task's error", func() bool { return ownErrors.Load() > 0 })
}
