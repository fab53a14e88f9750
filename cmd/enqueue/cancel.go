package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/heraldhq/herald/internal/ledger"
)

// cancelCmd is `enqueue cancel ID`.
type cancelCmd struct {
	ID     string `arg:"" help:"Dispatch id."`
	Reason string `help:"Why, recorded on each canceled receipt." default:"canceled by an operator"`
}

// Run cancels the dispatch and its deliveries that have not started; a dispatch still queued
// in Redis gets a tombstone row that cancels it when a worker first sees it.
func (c *cancelCmd) Run(ctx context.Context, e *env) error {
	id, err := parseID("dispatch", c.ID)
	if err != nil {
		return err
	}
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	// A dispatch PostgreSQL does not know yet may still wait in Redis: then a tombstone row makes
	// its first sight cancel it. An id known to neither is an error, not a tombstone.
	_, gerr := store.GetDispatch(ctx, id)
	if gerr != nil && !errors.Is(gerr, ledger.ErrNotFound) {
		return gerr
	}
	tombstone := false
	if errors.Is(gerr, ledger.ErrNotFound) {
		if tombstone, err = e.queued(ctx, id); err != nil {
			return err
		}
		if !tombstone {
			return fmt.Errorf("dispatch %s: not in PostgreSQL and not queued in Redis (queue %q): nothing to cancel", id, e.queue())
		}
	}
	res, err := store.CancelDispatch(ctx, id, c.Reason, tombstone)
	if err != nil {
		return err
	}
	out := map[string]any{"id": id, "was": string(res.Was), "dispatch_canceled": res.Dispatch, "tombstone": res.Tombstone,
		"deliveries_canceled": res.Receipts}
	return e.print(out, func(w io.Writer) {
		switch {
		case res.Tombstone:
			fmt.Fprintf(w, "dispatch %s: canceled before any worker saw it (still queued in Redis); it will send nothing\n", id)
		case res.Dispatch:
			fmt.Fprintf(w, "dispatch %s: canceled while %s; no more deliveries will be created", id, res.Was)
			fmt.Fprintf(w, ", %d deliver%s canceled\n", res.Receipts, plural(res.Receipts, "y", "ies"))
		default:
			fmt.Fprintf(w, "dispatch %s is %s: %d deliver%s that had not started canceled (a delivery being sent finishes)\n",
				id, res.Was, res.Receipts, plural(res.Receipts, "y", "ies"))
		}
	})
}
