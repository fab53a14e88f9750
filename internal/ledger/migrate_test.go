package ledger_test

import (
	"context"
	"fmt"
	"io/fs"
	"net/url"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// emptyDatabase creates a database with nothing in it, dropped at the end of the test.
func emptyDatabase(ctx context.Context, t *testing.T) string {
	t.Helper()
	base := testenv.DatabaseURL(t) //nolint:contextcheck // only to learn the server; testenv has its own deadline
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close(context.WithoutCancel(ctx)) }()
	name := testenv.Name("herald_mig")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx := context.WithoutCancel(ctx)
		c, err := pgx.Connect(cctx, base)
		if err == nil {
			_, _ = c.Exec(cctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(cctx)
		}
	})
	u, _ := url.Parse(base)
	u.Path = "/" + name
	return u.String()
}

// databaseAt returns a pool on a new database migrated up to version (an older release's
// schema), closed at the end of the test.
func databaseAt(ctx context.Context, t *testing.T, version int32) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(ctx, emptyDatabase(ctx, t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	conn, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA herald"); err != nil {
		t.Fatal(err)
	}
	m, err := migrate.NewMigrator(ctx, conn.Conn(), "herald.schema_version")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadMigrations(ledger.Migrations()); err != nil {
		t.Fatal(err)
	}
	if err := m.MigrateTo(ctx, version); err != nil {
		t.Fatal(err)
	}
	return pool
}

// TestUpgradeKeepsPendingRowsRoutable: rows written before the queue column existed get the
// empty queue, and any fleet's promoter still takes them.
func TestUpgradeKeepsPendingRowsRoutable(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := databaseAt(ctx, t, 4) // the last migration before queues
	const id = "0190f5a8-0000-7000-8000-0000000000aa"
	if _, err := pool.Exec(ctx, `INSERT INTO herald.dispatches (id, event_id, sealed, status) VALUES ($1, 'a.b', '{"t":"x"}', 'accepted')`, id); err != nil {
		t.Fatal(err)
	}
	if err := ledger.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	s := ledger.New(pool)
	d, err := s.GetDispatch(ctx, id)
	if err != nil || d.Queue != "" {
		t.Fatalf("upgraded dispatch: queue %q, %v", d.Queue, err)
	}
	due, err := s.Due(ctx, ledger.KindDispatch, "any_fleet", time.Minute, time.Hour, 10)
	if err != nil || len(due) != 1 || due[0].ID != id {
		t.Fatalf("a promoter of any fleet takes the upgraded row: %+v %v", due, err)
	}
}

// TestConcurrentMigrationsOnEmptyDatabase: workers of a rolling deploy start together and each
// applies the migrations. Some build indexes CONCURRENTLY, which waits for every transaction that
// holds an older snapshot, including a worker waiting for the migration lock: the migrator must
// not wait for that lock inside a statement, or the two wait for each other.
func TestConcurrentMigrationsOnEmptyDatabase(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	dbURL := emptyDatabase(ctx, t)
	const workers = 4
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for i := range workers {
		pool, err := pgxpool.New(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		wg.Go(func() { errs[i] = ledger.Migrate(ctx, pool) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("worker %d: migrate: %v", i, err)
		}
	}
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close(context.Background()) }()
	var invalid int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'herald' AND NOT i.indisvalid`).Scan(&invalid); err != nil || invalid > 0 {
		t.Errorf("%d invalid indexes left (%v)", invalid, err)
	}
}

// TestMigrateOnNewerSchemaKeepsIt: in a rolling deploy a newer worker applies its migrations, then
// an older worker restarts. The older one knows fewer migrations than the database has applied; it
// must start on the newer schema (the migration rules in DESIGN.md keep it correct there) and
// never migrate down.
func TestMigrateOnNewerSchemaKeepsIt(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, emptyDatabase(ctx, t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	known, err := fs.Glob(ledger.Migrations(), "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	newer := fstest.MapFS{fmt.Sprintf("%03d_newer_release.sql", len(known)+1): {
		Data: []byte("ALTER TABLE herald.receipts ADD COLUMN newer_release text NOT NULL DEFAULT '';\n"),
	}}
	for _, name := range known {
		b, err := fs.ReadFile(ledger.Migrations(), name)
		if err != nil {
			t.Fatal(err)
		}
		newer[name] = &fstest.MapFile{Data: b}
	}
	if err := ledger.MigrateFS(ctx, pool, "herald", newer); err != nil {
		t.Fatal(err)
	}

	if err := ledger.Migrate(ctx, pool); err != nil {
		t.Fatalf("an older worker on a newer schema: %v", err)
	}
	var version int
	if err := pool.QueryRow(ctx, "SELECT version FROM herald.schema_version").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if version != len(known)+1 {
		t.Errorf("schema_version %d after the older worker's Migrate, want %d (unchanged)", version, len(known)+1)
	}
	var columns int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.columns
		WHERE table_schema = 'herald' AND table_name = 'receipts' AND column_name = 'newer_release'`).Scan(&columns); err != nil {
		t.Fatal(err)
	}
	if columns != 1 {
		t.Error("the newer migration's column is gone: the older worker migrated down")
	}
}
