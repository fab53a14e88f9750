package receipts

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

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
// <schema>.schema_version. Applications may use it for their own tables.
func MigrateFS(ctx context.Context, pool *pgxpool.Pool, schema string, fsys fs.FS) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", schema, err)
	}
	defer conn.Release()
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
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate %s: %w", schema, err)
	}
	return nil
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
