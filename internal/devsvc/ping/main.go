// Command ping checks that the servers named by HERALD_TEST_REDIS_URL and
// HERALD_TEST_DATABASE_URL answer, and says which one does not. `make test` runs it first.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "make test:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context) error {
	rurl, durl := os.Getenv("HERALD_TEST_REDIS_URL"), os.Getenv("HERALD_TEST_DATABASE_URL")
	opt, err := redis.ParseURL(rurl)
	if err != nil {
		return fmt.Errorf("HERALD_TEST_REDIS_URL is not a redis:// URL")
	}
	opt.MaxRetries = -1
	redis.SetLogger(quiet{})
	rc := redis.NewClient(opt)
	defer func() { _ = rc.Close() }()
	if err := rc.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("Redis at %s (HERALD_TEST_REDIS_URL) does not answer: %w", opt.Addr, err)
	}
	cfg, err := pgx.ParseConfig(durl)
	if err != nil {
		return fmt.Errorf("HERALD_TEST_DATABASE_URL is not a postgres:// URL")
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("PostgreSQL at %s:%d (HERALD_TEST_DATABASE_URL) does not answer: %w", cfg.Host, cfg.Port, err)
	}
	return conn.Close(ctx)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}
