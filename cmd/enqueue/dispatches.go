package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/heraldhq/herald/internal/ledger"
)

// dispatchesCmd is `enqueue dispatches`.
type dispatchesCmd struct {
	Status string `help:"Only dispatches in this state: ${dispatch_states}." placeholder:"STATE"`
	Event  string `help:"Only dispatches of this event id." placeholder:"EVENT"`
	Limit  int    `help:"How many, newest first (1 to ${max_limit})." default:"20"`
}

// Run lists the dispatches that match the flags, newest first.
func (c *dispatchesCmd) Run(ctx context.Context, e *env) error {
	st, err := parseStatus(ledger.KindDispatch, c.Status)
	if err != nil {
		return err
	}
	limit, err := parseLimit(c.Limit)
	if err != nil {
		return err
	}
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	ds, err := store.FindDispatches(ctx, ledger.DispatchFilter{Status: st, EventID: c.Event, Limit: limit})
	if err != nil {
		return err
	}
	return printList(e, ds, viewDispatch, "no dispatches", func(w io.Writer, d *ledger.DispatchRow) {
		fmt.Fprintf(w, "%s  %s  %-11s %-30s attempt %d%s\n", d.AcceptedAt.Local().Format(time.DateTime), d.ID, d.Status, d.EventID,
			d.Attempt, reason(d.LastError))
	})
}
