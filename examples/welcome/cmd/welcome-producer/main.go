// Command welcome-producer dispatches accounts.welcome to one user: welcome-producer USER_ID.
// It reads HERALD_REDIS_URL, HERALD_SECRET_KEYS and HERALD_QUEUE, as the worker does.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/events"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "welcome-producer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: welcome-producer USER_ID")
	}
	cfg, err := herald.ClientConfigFromEnv(getenv)
	if err != nil {
		return err
	}
	c, err := herald.NewClient(cfg) // make one and share it: it is safe for concurrent use
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()

	userID := args[0]
	res, err := c.Dispatch(ctx, "accounts.welcome",
		[]events.Ref{{Name: "user", Resource: "users", ID: userID}}, nil,
		herald.IdempotencyKey("welcome:"+userID)) // a repeat within the window sends nothing
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res.ID) // the dispatch id, for `enqueue status`
	return nil
}
