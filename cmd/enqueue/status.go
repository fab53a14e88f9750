package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
)

// statusCmd is `enqueue status ID`.
type statusCmd struct {
	ID string `arg:"" help:"Dispatch id."`
}

// statusView is a dispatch and its receipts as `enqueue --json status` prints them.
type statusView struct {
	dispatchView
	Receipts []receiptView `json:"receipts"`
}

// Run shows the dispatch and its receipts, or that it still waits in Redis.
func (c *statusCmd) Run(ctx context.Context, e *env) error {
	id, err := parseID("dispatch", c.ID)
	if err != nil {
		return err
	}
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	d, err := store.GetDispatch(ctx, id)
	if errors.Is(err, ledger.ErrNotFound) {
		queued, qerr := e.queued(ctx, id)
		if qerr != nil {
			return qerr
		}
		if queued {
			v := statusView{dispatchView: dispatchView{ID: id, State: "queued"}, Receipts: []receiptView{}}
			return e.print(v, func(w io.Writer) { fmt.Fprintf(w, "dispatch %s: queued, not yet picked up by a worker\n", id) })
		}
		return fmt.Errorf("dispatch %s: not found in PostgreSQL nor queued in Redis", id)
	}
	if err != nil {
		return err
	}
	rs, err := store.ListReceipts(ctx, d.ID)
	if err != nil {
		return err
	}
	v := statusView{dispatchView: viewDispatch(d), Receipts: []receiptView{}}
	for _, r := range rs {
		v.Receipts = append(v.Receipts, viewReceipt(r))
	}
	return e.print(v, func(w io.Writer) {
		fmt.Fprintf(w, "dispatch %s\n  event     %s\n  status    %s (attempt %d)\n  accepted  %s\n", d.ID, d.EventID, d.Status, d.Attempt,
			d.AcceptedAt.Local().Format(time.DateTime))
		if d.LastError != "" {
			fmt.Fprintf(w, "  reason    %s\n", d.LastError)
		}
		if d.DuplicateOf != "" {
			fmt.Fprintf(w, "  see       %s\n", d.DuplicateOf)
		}
		if len(rs) == 0 {
			fmt.Fprintln(w, "  receipts  none")
			return
		}
		fmt.Fprintln(w, "  receipts")
		for _, r := range rs {
			extra := ""
			if r.LastError != "" {
				extra = "  — " + r.LastError
			}
			if r.InDoubt {
				extra += "  (in doubt)"
			}
			fmt.Fprintf(w, "    %s  %-8s %-24s %-9s attempt %d%s\n", r.ID, r.ChannelKey, r.Recipient.Address, r.Status, r.Attempt, extra)
		}
	})
}

// queued reports whether the dispatch's first task is still waiting in Redis.
func (e *env) queued(ctx context.Context, id string) (bool, error) {
	ropt, err := e.redis()
	if err != nil {
		return false, err
	}
	if err := cli.PingRedis(ctx, ropt); err != nil {
		return false, err
	}
	insp := asynq.NewInspector(ropt)
	defer func() { _ = insp.Close() }()
	info, err := insp.GetTaskInfo(e.queue(), tasks.DispatchTaskID(id, 0))
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up the queue: %w", err)
	}
	return info.State != asynq.TaskStateArchived, nil
}
