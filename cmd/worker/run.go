package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/receipts"
)

type root struct {
	Serve        serveCmd   `cmd:"" default:"1" help:"Run the worker (the default)."`
	Migrate      migrateCmd `cmd:"" help:"Apply Herald's migrations (and the example tables) and exit."`
	SeedExamples seedCmd    `cmd:"" name:"seed-examples" help:"Create the example user (id 42) the README's tour dispatches to."`
}

type serveCmd struct{}
type migrateCmd struct{}
type seedCmd struct {
	Email string `help:"The example user's address." default:"ada@example.com"`
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var r root
	kctx, done, err := cli.Parse(&r, "worker", "Herald's reference worker: the example events on herald.Run.\n\n"+
		"Configuration comes from HERALD_* variables (see the README); HERALD_EXAMPLE_RESET_KEY (base64, 32+ bytes) signs the\n"+
		"example password-reset tokens and HERALD_EXAMPLE_BASE_URL is where their links point.", args, stdout, stderr)
	if done {
		return err
	}
	switch kctx.Command() {
	case "migrate":
		return migrate(ctx, getenv)
	case "seed-examples":
		return seed(ctx, getenv, r.SeedExamples.Email, stdout)
	default:
		return serve(ctx, getenv, stderr)
	}
}

func dbFromEnv(ctx context.Context, getenv func(string) string) (*herald.Config, error) {
	u := getenv("HERALD_DATABASE_URL")
	if u == "" {
		return nil, errors.New("HERALD_DATABASE_URL is not set: set it to postgres://user:pass@host:5432/dbname")
	}
	pool, err := herald.OpenDB(ctx, u)
	if err != nil {
		return nil, err
	}
	return &herald.Config{DatabaseURL: u, DB: pool}, nil
}

func migrate(ctx context.Context, getenv func(string) string) error {
	cfg, err := dbFromEnv(ctx, getenv)
	if err != nil {
		return err
	}
	defer cfg.DB.Close()
	if err := receipts.Migrate(ctx, cfg.DB); err != nil {
		return err
	}
	return examples.Migrate(ctx, cfg.DB)
}

func seed(ctx context.Context, getenv func(string) string, email string, stdout io.Writer) error {
	cfg, err := dbFromEnv(ctx, getenv)
	if err != nil {
		return err
	}
	defer cfg.DB.Close()
	if err := examples.Migrate(ctx, cfg.DB); err != nil {
		return err
	}
	if err := examples.SeedUser(ctx, cfg.DB, examples.User{ID: "42", Email: email, Name: "Ada Lovelace"}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "example user 42 <%s> is ready\n", email)
	return nil
}

func serve(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, err := herald.ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	var resetKey []byte
	if k := getenv("HERALD_EXAMPLE_RESET_KEY"); k != "" {
		if resetKey, err = base64.StdEncoding.DecodeString(k); err != nil || len(resetKey) < 32 {
			return errors.New("HERALD_EXAMPLE_RESET_KEY: want 32 or more bytes, base64 (openssl rand -base64 32)")
		}
	}
	pool, err := herald.OpenDB(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	cfg.DB = pool
	cfg.LogOutput = stderr
	if cfg.Migrate != "off" {
		if err := examples.Migrate(ctx, pool); err != nil {
			return err
		}
	}
	reg := events.NewRegistry()
	if err := examples.Register(reg, pool, examples.Options{ResetKey: resetKey, BaseURL: getenv("HERALD_EXAMPLE_BASE_URL")}); err != nil {
		return err
	}
	return herald.Run(ctx, cfg, reg)
}
