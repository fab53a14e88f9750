package ledger

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migrations returns the embedded migrations, for tools that apply them another way.
func Migrations() fs.FS {
	sub, _ := fs.Sub(migrationFS, "migrations")
	return sub
}

// Migrate creates the herald schema if needed and applies pending migrations (with tern, under
// an advisory lock, so concurrent workers starting together are safe).
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return MigrateFS(ctx, pool, "herald", Migrations())
}

// MigrateFS applies the tern migrations in fsys, keeping their version in
// <schema>.schema_version. Applications may use it for their own tables. A schema already at a
// later version than fsys knows (a newer release migrated it) is left as it is, never migrated
// down: MigrateFS returns nil.
func MigrateFS(ctx context.Context, pool *pgxpool.Pool, schema string, fsys fs.FS) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", schema, err)
	}
	defer conn.Release()
	unlock, err := lockMigrations(ctx, conn.Conn())
	if err != nil {
		return fmt.Errorf("migrate %s: take the migration lock: %w", schema, err)
	}
	defer unlock()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+quoteIdent(schema)); err != nil {
		return fmt.Errorf("migrate %s: create schema: %w", schema, err)
	}
	m, err := migrate.NewMigrator(ctx, conn.Conn(), quoteIdent(schema)+".schema_version")
	if err != nil {
		return fmt.Errorf("migrate %s: %w", schema, err)
	}
	if err := m.LoadMigrations(fsys); err != nil {
		return fmt.Errorf("migrate %s: load: %w", schema, err)
	}
	current, err := m.GetCurrentVersion(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: read the schema version: %w", schema, err)
	}
	if int(current) >= len(m.Migrations) {
		// Up to date, or a newer release has migrated further than this binary knows (an older
		// worker restarting in a rolling deploy). The migration rules of DESIGN.md keep an older
		// worker correct on a newer schema; tern would refuse the version or migrate down.
		return nil
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate %s: %w", schema, err)
	}
	return nil
}

// SchemaVersion returns the version the herald schema is at (0 before any migration) and the
// version this release's migrations bring it to. A worker that does not migrate
// (HERALD_MIGRATE=off) waits until the first reaches the second.
func SchemaVersion(ctx context.Context, pool *pgxpool.Pool) (current, known int, err error) {
	files, err := fs.Glob(Migrations(), "*.sql")
	if err != nil {
		return 0, 0, fmt.Errorf("herald schema version: %w", err)
	}
	var exists bool
	if err := pool.QueryRow(ctx, `SELECT to_regclass('herald.schema_version') IS NOT NULL`).Scan(&exists); err != nil {
		return 0, 0, fmt.Errorf("herald schema version: %w", err)
	}
	if exists {
		err = pool.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM herald.schema_version`).Scan(&current)
		if err != nil {
			return 0, 0, fmt.Errorf("herald schema version: %w", err)
		}
	}
	return current, len(files), nil
}

// ternLock is the advisory lock tern holds while it migrates (its unexported migrate.lockNum;
// TestConcurrentMigrationsOnEmptyDatabase fails if the two ever differ).
const ternLock = int64(9628173550095224)

// lockMigrations takes tern's migration lock for this session before tern asks for it, polling
// with pg_try_advisory_lock instead of waiting in pg_advisory_lock as tern does. A session that
// waits inside a statement holds a snapshot, and CREATE INDEX CONCURRENTLY in the migration of
// the session holding the lock waits for every older snapshot: two workers starting together
// would wait for each other until PostgreSQL aborts one ("deadlock detected"). Advisory locks
// stack within a session, so tern's own lock then succeeds at once.
func lockMigrations(ctx context.Context, conn *pgx.Conn) (unlock func(), err error) {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", ternLock).Scan(&ok); err != nil {
			return nil, err
		}
		if ok {
			return func() {
				_, _ = conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", ternLock)
			}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
}

func quoteIdent(s string) string {
	out := `"`
	for _, c := range s {
		if c == '"' {
			out += `""`
		} else {
			out += string(c)
		}
	}
	return out + `"`
}
