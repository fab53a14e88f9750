package herald_test

import (
	"context"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples"
)

type brokenTemplates struct{}

func (brokenTemplates) ID() string { return "broken.templates" }
func (brokenTemplates) Channels(context.Context, *events.Dispatch) ([]events.Channel, error) {
	return nil, nil
}
func (brokenTemplates) Recipients(context.Context, *events.Dispatch, events.Channel) ([]events.Recipient, error) {
	return nil, nil
}
func (brokenTemplates) Templates() fs.FS {
	return fstest.MapFS{"email.html.tmpl": {Data: []byte("{{ .unclosed ")}}
}

// seedExamples creates the example tables and user 42 <ada@example.net>.
func seedExamples(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if err := examples.Migrate(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	if err := examples.SeedUser(t.Context(), pool, examples.User{ID: "42", Email: "ada@example.net", Name: "Ada"}); err != nil {
		t.Fatal(err)
	}
}

// exampleRegistry seeds the examples and registers their events, reset links to https://app.test.
func exampleRegistry(t *testing.T, pool *pgxpool.Pool) *events.Registry {
	t.Helper()
	seedExamples(t, pool)
	reg := events.NewRegistry()
	if err := examples.Register(reg, pool, examples.Options{ResetKey: []byte(strings.Repeat("r", 32)), BaseURL: "https://app.test"}); err != nil {
		t.Fatal(err)
	}
	return reg
}
