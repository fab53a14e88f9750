package herald_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestRunWithMigrateOffWaitsForTheSchema: a worker started with HERALD_MIGRATE=off on a schema
// older than it knows (its migrations not yet applied by `worker migrate`) does not serve — its
// statements would fail on the missing columns, and its tasks with them — but waits, saying so,
// and starts once the schema has caught up.
func TestRunWithMigrateOffWaitsForTheSchema(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	dbURL := testenv.DatabaseURL(t)
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var known int
	if err := pool.QueryRow(ctx, `SELECT version FROM herald.schema_version`).Scan(&known); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `UPDATE herald.schema_version SET version = 7`); err != nil { // as the previous release left it
		t.Fatal(err)
	}
	env := baseEnv()
	env["HERALD_REDIS_URL"], env["HERALD_DATABASE_URL"], env["HERALD_MIGRATE"] = testenv.RedisURL(t), dbURL, "off"
	env["HERALD_QUEUE"], env["HERALD_HTTP_ADDR"] = testenv.Queue(t), "127.0.0.1:0"
	cfg, err := herald.ConfigFromEnv(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	var logs testenv.LogBuffer
	cfg.LogOutput = &logs
	ready := make(chan string, 1)
	cfg.Ready = func(addr string) { ready <- addr }
	done := make(chan error, 1)
	go func() { done <- herald.Run(ctx, cfg, events.NewRegistry()) }()

	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "waiting for `worker migrate`") {
		select {
		case <-ready:
			t.Fatal("the worker started on a schema older than it knows")
		case err := <-done:
			t.Fatalf("Run: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no word of the wait in 20s:\n%s", logs.String())
		}
	}
	if _, err := pool.Exec(ctx, `UPDATE herald.schema_version SET version = $1`, known); err != nil { // `worker migrate` ran
		t.Fatal(err)
	}
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not start once the schema caught up")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after shutdown: %v", err)
	}
}
