package engine_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/testenv"
)

// BenchmarkDispatchTxCommits measures how many DispatchTx transactions 8 concurrent producers
// commit per second, with the outbox NOTIFY (the default) and without it. A NOTIFY takes
// PostgreSQL's cluster-wide notify lock at commit and holds it until the commit is flushed, so
// notifying commits cannot share a WAL flush. A worker LISTENs meanwhile, as in production.
//
//	go test -run '^$' -bench DispatchTxCommits -count 5 ./tasks/
func BenchmarkDispatchTxCommits(b *testing.B) {
	for _, bc := range []struct {
		name    string
		disable bool
	}{{"notify", false}, {"no-notify", true}} {
		b.Run(bc.name, func(b *testing.B) {
			benchCommits(b, bc.disable)
		})
	}
}

func benchCommits(b *testing.B, disableNotify bool) {
	const producers = 8
	ctx := b.Context()
	url := testenv.DatabaseURL(b)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = producers
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	client, err := engine.NewClient(engine.Config(herald.Config{SecretKeys: secretKeys, Queue: testenv.Name("bench"), DisableOutboxNotify: disableNotify}.WithDefaults()))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = client.Close() }()

	lctx, stop := context.WithCancel(ctx)
	listening := make(chan struct{})
	var listener sync.WaitGroup
	listener.Go(func() { listen(lctx, b, url, listening) })
	defer func() { stop(); listener.Wait() }()
	<-listening

	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range producers {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					_, err := client.DispatchTx(ctx, tx, "accounts.password_reset", user("42"), map[string]any{"n": 1})
					return err
				}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
}

// listen drains the outbox channel on a connection of its own, like a worker's promoter.
func listen(ctx context.Context, b *testing.B, url string, listening chan<- struct{}) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Error(err)
		close(listening)
		return
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+engine.OutboxChannel); err != nil {
		b.Error(err)
	}
	close(listening)
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return
		}
	}
}
