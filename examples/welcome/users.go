package welcome

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/events"
)

// User is what templates see as .user.
type User struct {
	ID    string
	Email string
	Name  string
}

// UsersLoader hydrates "users" references (user=users/42) at send time. It reads the example
// users table that `worker migrate` creates and `worker seed-examples` fills; point the query
// at your own table.
type UsersLoader struct{ DB *pgxpool.Pool }

var _ events.Loader = UsersLoader{}

// Load implements events.Loader: the User, or events.ErrNotFound.
func (l UsersLoader) Load(ctx context.Context, ref events.Ref) (any, error) {
	var u User
	err := l.DB.QueryRow(ctx, `SELECT id, email, name FROM herald_example.users WHERE id = $1`, ref.ID).
		Scan(&u.ID, &u.Email, &u.Name)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("user %s: %w", ref.ID, events.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load user %s: %w", ref.ID, err)
	}
	return u, nil
}
