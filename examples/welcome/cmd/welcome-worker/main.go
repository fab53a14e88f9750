// Command welcome-worker is a Herald worker of one's own: the Welcome event and its users loader
// on herald.Run. It reads the HERALD_* variables (see the README's "Configuration").
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples/welcome"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "welcome-worker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	cfg, err := herald.ConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	pool, err := herald.OpenDB(ctx, cfg.DatabaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	cfg.DB = pool // one pool for Herald and your loaders
	cfg.LogOutput = stderr

	reg := events.NewRegistry()
	reg.MustRegister(welcome.Welcome{})
	if err := reg.RegisterLoader("users", welcome.UsersLoader{DB: pool}); err != nil {
		return err
	}
	return herald.Run(ctx, cfg, reg) // until SIGINT or SIGTERM
}
