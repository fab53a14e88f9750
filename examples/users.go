package examples

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/receipts"
)

//go:embed migrations/*.sql
var migrations embed.FS

// User is a row of the example users table.
type User struct {
	ID     string
	Email  string
	Name   string
	Locale string
}

// Migrate creates the example tables (schema herald_example).
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	sub, _ := fs.Sub(migrations, "migrations")
	return receipts.MigrateFS(ctx, pool, "herald_example", sub)
}

// SeedUser inserts or updates a user.
func SeedUser(ctx context.Context, q receipts.Querier, u User) error {
	_, err := q.Exec(ctx, `INSERT INTO herald_example.users (id, email, name, locale) VALUES ($1, $2, $3, COALESCE(NULLIF($4, ''), 'en'))
		ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name, locale = EXCLUDED.locale`,
		u.ID, u.Email, u.Name, u.Locale)
	if err != nil {
		return fmt.Errorf("seed user %s: %w", u.ID, err)
	}
	return nil
}

// UsersLoader hydrates "users" references from the example table.
type UsersLoader struct{ DB receipts.Querier }

var _ events.Loader = UsersLoader{}

// Load returns the User, or events.ErrNotFound.
func (l UsersLoader) Load(ctx context.Context, ref events.Ref) (any, error) {
	var u User
	err := l.DB.QueryRow(ctx, `SELECT id, email, name, locale FROM herald_example.users WHERE id = $1`, ref.ID).
		Scan(&u.ID, &u.Email, &u.Name, &u.Locale)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("user %s: %w", ref.ID, events.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load user %s: %w", ref.ID, err)
	}
	return u, nil
}
