package receipts

import (
	"context"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/ledger"
)

// Migrations returns the herald schema's tern migrations, for tools that apply them another way.
func Migrations() fs.FS { return ledger.Migrations() }

// Migrate creates the herald schema if needed and applies pending migrations (with tern, under
// an advisory lock, so workers starting together are safe). A schema a newer release has
// migrated further is left as it is.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error { return ledger.Migrate(ctx, pool) }

// MigrateFS applies the tern migrations in fsys, keeping their version in
// <schema>.schema_version. Applications may use it for their own tables. A schema already at a
// later version than fsys knows is left as it is: MigrateFS returns nil.
func MigrateFS(ctx context.Context, pool *pgxpool.Pool, schema string, fsys fs.FS) error {
	return ledger.MigrateFS(ctx, pool, schema, fsys)
}

// SchemaVersion returns the version the herald schema is at (0 before any migration) and the
// version this release's migrations bring it to.
func SchemaVersion(ctx context.Context, pool *pgxpool.Pool) (current, known int, err error) {
	return ledger.SchemaVersion(ctx, pool)
}
