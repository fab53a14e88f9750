package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/cli"
)

// dispatchCmd is `enqueue dispatch EVENT`.
type dispatchCmd struct {
	Event          string   `arg:"" help:"Event id, such as accounts.password_reset."`
	Ref            []string `sep:"none" help:"Data reference name=resource/id, such as user=users/42. Repeat the flag for more." placeholder:"NAME=RESOURCE/ID"`
	Var            []string `sep:"none" help:"Variable key=value (a string, commas included), or key:=JSON (a number, object, …). Repeat the flag for more." placeholder:"KEY=VALUE"`
	Secret         []string `sep:"none" help:"Secret variable key=value: sealed before it leaves this process, never logged. Repeat the flag for more." placeholder:"KEY=VALUE"`
	IdempotencyKey string   `help:"Idempotency key: a repeat within the window is the first dispatch." placeholder:"KEY"`
	Tx             bool     `help:"Record the dispatch in PostgreSQL (the outbox path) instead of enqueueing it in Redis; idempotency is answered at once (a repeat prints the first id, and a note on stderr)."`
	Actor          string   `help:"Who is dispatching, recorded on the dispatch." default:"cli"`
}

// parseKV splits a --what key=value flag value at its first "=".
func parseKV(s, what string) (string, string, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("--%s %q: want key=value", what, s)
	}
	return k, v, nil
}

// Run dispatches the event, through Redis or, with --tx, through the PostgreSQL outbox, and
// prints the dispatch id.
func (c *dispatchCmd) Run(ctx context.Context, e *env) error {
	var refs []events.Ref
	for _, s := range c.Ref {
		r, err := events.ParseRef(s)
		if err != nil {
			return fmt.Errorf("--ref: %w", err)
		}
		refs = append(refs, r)
	}
	vars := map[string]any{}
	for _, s := range c.Var {
		k, v, err := parseKV(s, "var")
		if err != nil {
			return err
		}
		if key, ok := strings.CutSuffix(k, ":"); ok { // key:=JSON
			var j any
			if err := json.Unmarshal([]byte(v), &j); err != nil {
				return fmt.Errorf("--var %s:=…: not JSON: %w", key, err)
			}
			vars[key] = json.RawMessage(v)
			continue
		}
		vars[k] = v
	}
	for _, s := range c.Secret {
		k, _, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return errors.New("--secret: want key=value")
		}
		vars[k] = events.NewSecret(strings.TrimPrefix(s, k+"="))
	}
	if err := e.secretKeys(); err != nil {
		return err
	}
	opts := []herald.DispatchOption{herald.Actor(c.Actor)}
	if c.IdempotencyKey != "" {
		opts = append(opts, herald.IdempotencyKey(c.IdempotencyKey))
	}
	if c.Tx {
		pool, err := e.db(ctx)
		if err != nil {
			return err
		}
		defer pool.Close()
		cfg := e.cfg
		cfg.RedisURL = "" // the outbox path needs no Redis
		client, err := herald.NewClient(cfg)
		if err != nil {
			return err
		}
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
		res, err := client.DispatchTx(ctx, tx, c.Event, refs, vars, opts...)
		if err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		v := struct {
			ID        string `json:"id"`
			Duplicate bool   `json:"duplicate"`
		}{res.ID, res.Duplicate}
		return e.print(v, func(w io.Writer) {
			fmt.Fprintln(w, res.ID)
			if res.Duplicate { // on stderr: id=$(enqueue dispatch --tx …) holds the id alone
				fmt.Fprintf(e.errOut, "duplicate: the idempotency key was already used with the same arguments; %s is the first dispatch\n", res.ID)
			}
		})
	}
	ropt, err := e.redis()
	if err != nil {
		return err
	}
	if err := cli.PingRedis(ctx, ropt); err != nil {
		return err
	}
	cfg := e.cfg
	cfg.Redis = ropt
	client, err := herald.NewClient(cfg)
	if err != nil {
		return err
	}
	defer func() { _ = client.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	res, err := client.Dispatch(ctx, c.Event, refs, vars, opts...)
	if err != nil {
		return err
	}
	return e.print(map[string]string{"id": res.ID}, func(w io.Writer) { fmt.Fprintln(w, res.ID) })
}
