// Package testenv gives Herald's tests their real services: the Redis and PostgreSQL named by
// HERALD_TEST_REDIS_URL and HERALD_TEST_DATABASE_URL (set by `make test`). A missing variable or
// a server that does not answer fails the test; nothing is skipped. Each test gets its own
// database (cloned from a migrated template) and its own asynq queue, and cleans up only what it
// created.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/redisconn"
)

func must(t testing.TB, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run the tests with `make test`, which starts throwaway servers, or point it at a server", name)
	}
	return v
}

// RedisURL returns HERALD_TEST_REDIS_URL.
func RedisURL(t testing.TB) string { t.Helper(); return must(t, "HERALD_TEST_REDIS_URL") }

// RedisOpt returns asynq connection options for the test Redis, optionally on another db.
func RedisOpt(t testing.TB) asynq.RedisClientOpt {
	t.Helper()
	opt, err := asynq.ParseRedisURI(RedisURL(t))
	if err != nil {
		t.Fatalf("HERALD_TEST_REDIS_URL: %v", err)
	}
	return opt.(asynq.RedisClientOpt)
}

// Name returns a short random name with prefix, safe as a database or queue name.
func Name(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + "_" + hex.EncodeToString(b)
}

// Queue returns a fresh asynq queue name and deletes the queue at the end of the test.
func Queue(t testing.TB) string {
	t.Helper()
	q := Name("herald_test")
	opt := RedisOpt(t)
	t.Cleanup(func() { DropQueue(opt, q) })
	return q
}

// DropQueue removes every key of asynq queue q (its tasks and its statistics) from Redis.
func DropQueue(opt asynq.RedisClientOpt, q string) {
	ctx := context.Background()
	insp := asynq.NewInspector(opt)
	_ = insp.DeleteQueue(q, true)
	_ = insp.Close()
	rc, _ := redisconn.New(opt)
	defer func() { _ = rc.Close() }()
	iter := rc.Scan(ctx, 0, "asynq:{"+q+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		rc.Del(ctx, iter.Val())
	}
	rc.SRem(ctx, "asynq:queues", q)
}

// ForgetAsynqServer removes the registration an asynq server in process pid left in Redis when
// it was killed (a graceful shutdown removes its own).
func ForgetAsynqServer(opt asynq.RedisClientOpt, pid int) {
	ctx := context.Background()
	rc, _ := redisconn.New(opt)
	defer func() { _ = rc.Close() }()
	mark := fmt.Sprintf(":%d:", pid)
	for _, set := range []string{"asynq:servers", "asynq:workers"} {
		for _, member := range rc.ZRange(ctx, set, 0, -1).Val() {
			if strings.Contains(member, mark) {
				rc.ZRem(ctx, set, member)
				rc.Del(ctx, member)
			}
		}
	}
}

var (
	tplOnce sync.Once
	tplName string
	tplErr  error
	tplMu   sync.Mutex
)

func adminConn(ctx context.Context, t testing.TB) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, must(t, "HERALD_TEST_DATABASE_URL"))
	if err != nil {
		t.Fatalf("PostgreSQL named by HERALD_TEST_DATABASE_URL does not answer: %v", err)
	}
	return c
}

func withDB(base, db string) string {
	u, err := url.Parse(base)
	if err != nil {
		return base
	}
	u.Path = "/" + db
	return u.String()
}

// DatabaseURL returns a URL for a fresh database with Herald's migrations applied, dropped at
// the end of the test.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := must(t, "HERALD_TEST_DATABASE_URL")
	tplOnce.Do(func() { tplName, tplErr = makeTemplate(ctx, t, base) })
	if tplErr != nil {
		t.Fatalf("test database template: %v", tplErr)
	}
	name := Name("herald_t")
	tplMu.Lock() // CREATE DATABASE … TEMPLATE needs the template to have no other users
	c := adminConn(ctx, t)
	_, err := c.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+tplName)
	_ = c.Close(ctx)
	tplMu.Unlock()
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c := adminConn(ctx, t)
		defer func() { _ = c.Close(ctx) }()
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Logf("drop test database %s: %v", name, err)
		}
	})
	return withDB(base, name)
}

// DB returns a pool on a fresh migrated database (see DatabaseURL).
func DB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), DatabaseURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close) // registered after the drop, so it runs before it
	return pool
}

func makeTemplate(ctx context.Context, t testing.TB, base string) (string, error) {
	name := Name("herald_tpl")
	c := adminConn(ctx, t)
	defer func() { _ = c.Close(ctx) }()
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", err
	}
	templates = append(templates, name)
	pool, err := pgxpool.New(ctx, withDB(base, name))
	if err != nil {
		return "", err
	}
	defer pool.Close()
	if err := ledger.Migrate(ctx, pool); err != nil {
		return "", err
	}
	return name, nil
}

var templates []string

// Main runs a package's tests, runs cleanups, fails the run if a test left a goroutine behind
// (goleak), then drops the template database it made. Use it from TestMain:
// func TestMain(m *testing.M) { testenv.Main(m) }.
func Main(m *testing.M, cleanups ...func()) {
	code := m.Run()
	for _, c := range cleanups {
		c()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines left behind by the tests: %v\n", err)
			code = 1
		}
	}
	if len(templates) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if c, err := pgx.Connect(ctx, os.Getenv("HERALD_TEST_DATABASE_URL")); err == nil {
			for _, n := range templates {
				if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)"); err != nil {
					fmt.Fprintf(os.Stderr, "drop %s: %v\n", n, err)
				}
			}
			_ = c.Close(ctx)
		}
		cancel()
	}
	os.Exit(code)
}

// Redact hides a URL's password for test logs.
func Redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return strings.Repeat("x", 8)
	}
	return p.Redacted()
}

// LogBuffer is a bytes.Buffer safe for a logger writing while the test reads.
type LogBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

// Write appends p.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
