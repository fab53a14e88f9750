package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/engine"
)

// rejectedCmd is the `enqueue rejected` group; rejected alone is rejected list.
type rejectedCmd struct {
	List    rejectedListCmd    `cmd:"" default:"withargs" help:"List rejected tasks, newest first (the default: enqueue rejected)."`
	Requeue rejectedRequeueCmd `cmd:"" help:"Enqueue again a task held for a newer worker (its payload was kept), once the fleet is upgraded."`
}

// rejectedListCmd is `enqueue rejected list`.
type rejectedListCmd struct {
	Limit int `help:"How many, newest first." default:"20"`
}

// rejectedRequeueCmd is `enqueue rejected requeue ID`.
type rejectedRequeueCmd struct {
	ID int64 `arg:"" help:"The rejected task's id (enqueue rejected shows it)."`
}

// Help is the detail of `enqueue rejected --help`.
func (rejectedCmd) Help() string {
	return "A rejected task is one that could not become a dispatch or a receipt row: its payload was too broken to " +
		"decode (it is not kept, only its size and SHA-256), or it named a dispatch or receipt that does not exist, " +
		"or its payload has a newer version than the workers understood for HERALD_NEWER_PAYLOAD_FOR (its payload is " +
		"kept: enqueue rejected requeue ID enqueues it again once the fleet is upgraded). " +
		"A dispatch or a delivery that failed (a missing application row, a refused address, attempts exhausted) is " +
		"not listed here: see enqueue dispatches --status failed and enqueue receipts list --status failed."
}

// Run lists rejected tasks, newest first.
func (c *rejectedListCmd) Run(ctx context.Context, e *env) error {
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	rt, err := store.ListRejectedTasks(ctx, c.Limit)
	if err != nil {
		return err
	}
	type row struct {
		ID            int64     `json:"id"`
		TaskType      string    `json:"task_type"`
		TaskID        string    `json:"task_id"`
		Queue         string    `json:"queue"`
		Reason        string    `json:"reason"`
		PayloadSize   int       `json:"payload_size"`
		PayloadSHA256 string    `json:"payload_sha256"`
		Requeueable   bool      `json:"requeueable"`
		At            time.Time `json:"created_at"`
	}
	rows := []row{}
	for _, t := range rt {
		rows = append(rows, row{t.ID, t.TaskType, t.TaskID, t.Queue, t.Reason, t.PayloadSize, t.PayloadSHA256, t.Requeueable, t.CreatedAt})
	}
	return e.print(rows, func(w io.Writer) {
		if len(rt) == 0 {
			fmt.Fprintln(w, "no rejected tasks")
			return
		}
		for _, t := range rt {
			held := ""
			if t.Requeueable {
				held = "[requeueable] "
			}
			fmt.Fprintf(w, "%-6d %s  %-15s %-50s %s%s\n", t.ID, t.CreatedAt.Local().Format(time.DateTime), t.TaskType, t.TaskID, held, t.Reason)
		}
	})
}

// Run enqueues again a task held for a newer worker.
func (c *rejectedRequeueCmd) Run(ctx context.Context, e *env) error {
	ropt, err := e.redis()
	if err != nil {
		return err
	}
	if err := cli.PingRedis(ctx, ropt); err != nil {
		return err
	}
	pool, err := e.db(ctx)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := e.secretKeys(); err != nil {
		return err
	}
	cfg := e.cfg
	cfg.Redis, cfg.DB = ropt, pool
	client, err := engine.NewClient(engine.Config(cfg)) // the task's retries and timeout: the workers' settings
	if err != nil {
		return err
	}
	defer func() { _ = client.Close() }()
	taskID, err := client.RequeueRejected(ctx, c.ID)
	if err != nil {
		return err
	}
	v := struct {
		ID     int64  `json:"id"`
		TaskID string `json:"task_id"`
	}{c.ID, taskID}
	return e.print(v, func(w io.Writer) { fmt.Fprintf(w, "requeued rejected task %d as task %s\n", c.ID, taskID) })
}
