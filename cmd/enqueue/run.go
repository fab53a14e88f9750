package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/receipts"
	"github.com/heraldhq/herald/tasks"
)

type root struct {
	EnvFile  string      `help:"File of KEY=value settings used for variables not set in the environment." default:".herald/dev.env" placeholder:"FILE"`
	JSON     bool        `help:"Print JSON instead of text."`
	Dispatch dispatchCmd `cmd:"" help:"Dispatch an event; prints the dispatch id."`
	Status   statusCmd   `cmd:"" help:"Show a dispatch and its receipts."`
	Cancel   cancelCmd   `cmd:"" help:"Cancel a dispatch's deliveries that have not started (delayed or waiting to retry)."`
	Rejected rejectedCmd `cmd:"" help:"List tasks too broken to process (malformed payloads, missing rows)."`
	Receipts receiptsCmd `cmd:"" help:"Inspect receipts."`
	Mailbox  mailboxCmd  `cmd:"" help:"Read the development mailbox (HERALD_SMTP_URL=capture://)."`
}

type dispatchCmd struct {
	Event          string   `arg:"" help:"Event id, such as accounts.password_reset."`
	Ref            []string `help:"Data reference name=resource/id, such as user=users/42. Repeatable." placeholder:"NAME=RESOURCE/ID"`
	Var            []string `help:"Variable key=value (a string), or key:=JSON (a number, object, …). Repeatable." placeholder:"KEY=VALUE"`
	Secret         []string `help:"Secret variable key=value: sealed before it leaves this process, never logged. Repeatable." placeholder:"KEY=VALUE"`
	IdempotencyKey string   `help:"Idempotency key: a repeat within the window is the first dispatch." placeholder:"KEY"`
	Tx             bool     `help:"Record the dispatch in PostgreSQL (the outbox path) instead of enqueueing it in Redis; idempotency is answered at once."`
	Actor          string   `help:"Who is dispatching, recorded on the dispatch." default:"cli"`
}

type statusCmd struct {
	ID string `arg:"" help:"Dispatch id."`
}

type receiptsCmd struct {
	Show   receiptShowCmd   `cmd:"" help:"Show one receipt."`
	Cancel receiptCancelCmd `cmd:"" help:"Cancel one delivery that has not started."`
}

type receiptCancelCmd struct {
	ID     string `arg:"" help:"Receipt id."`
	Reason string `help:"Why, recorded on the receipt." default:"canceled by an operator"`
}

type cancelCmd struct {
	ID     string `arg:"" help:"Dispatch id."`
	Reason string `help:"Why, recorded on each canceled receipt." default:"canceled by an operator"`
}

type rejectedCmd struct {
	Limit int `help:"How many, newest first." default:"20"`
}

type receiptShowCmd struct {
	ID string `arg:"" help:"Receipt id."`
}

type mailboxCmd struct {
	List mailboxListCmd `cmd:"" help:"List captured mail, newest first."`
	Show mailboxShowCmd `cmd:"" help:"Show one captured mail with its text and HTML."`
}

type mailboxListCmd struct {
	Limit int `help:"How many." default:"20"`
}

type mailboxShowCmd struct {
	ID int64 `arg:"" help:"Mail id (from mailbox list)."`
}

// env is what every command reads its settings from.
type env struct {
	getenv func(string) string
	out    io.Writer
	json   bool
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var r root
	kctx, done, err := cli.Parse(&r, "enqueue", "Herald's ops CLI: dispatch events, inspect dispatches, receipts and the development mailbox.\n\n"+
		"Settings come from HERALD_* variables, else from --env-file (written by `make run`).", args, stdout, stderr)
	if done {
		return err
	}
	get, err := cli.Env(getenv, r.EnvFile)
	if err != nil {
		return err
	}
	e := &env{getenv: get, out: stdout, json: r.JSON}
	switch kctx.Command() {
	case "dispatch <event>":
		return r.Dispatch.run(ctx, e)
	case "status <id>":
		return r.Status.run(ctx, e)
	case "receipts show <id>":
		return r.Receipts.Show.run(ctx, e)
	case "receipts cancel <id>":
		return r.Receipts.Cancel.run(ctx, e)
	case "cancel <id>":
		return r.Cancel.run(ctx, e)
	case "rejected":
		return r.Rejected.run(ctx, e)
	case "mailbox list":
		return r.Mailbox.List.run(ctx, e)
	case "mailbox show <id>":
		return r.Mailbox.Show.run(ctx, e)
	}
	return fmt.Errorf("unknown command %q", kctx.Command())
}

func (e *env) need(key, hint string) (string, error) {
	v := e.getenv(key)
	if v == "" {
		return "", fmt.Errorf("%s is not set: %s (or run `make run`, which writes .herald/dev.env)", key, hint)
	}
	return v, nil
}

func (e *env) redis() (asynq.RedisConnOpt, error) {
	u, err := e.need("HERALD_REDIS_URL", "set it to redis://host:6379/0")
	if err != nil {
		return nil, err
	}
	opt, err := asynq.ParseRedisURI(u)
	if err != nil {
		return nil, errors.New("HERALD_REDIS_URL is not a valid redis:// URL")
	}
	return opt, nil
}

func (e *env) db(ctx context.Context) (*pgxpool.Pool, error) {
	u, err := e.need("HERALD_DATABASE_URL", "set it to postgres://user:pass@host:5432/dbname")
	if err != nil {
		return nil, err
	}
	return herald.OpenDB(ctx, u)
}

// store opens the database named by HERALD_DATABASE_URL; done closes it.
func (e *env) store(ctx context.Context) (*receipts.Store, func(), error) {
	pool, err := e.db(ctx)
	if err != nil {
		return nil, nil, err
	}
	return receipts.New(pool), pool.Close, nil
}

func (e *env) queue() string {
	if q := e.getenv("HERALD_QUEUE"); q != "" {
		return q
	}
	return "herald"
}

func (e *env) print(v any, text func(io.Writer)) error {
	if e.json {
		enc := json.NewEncoder(e.out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	text(e.out)
	return nil
}

func parseKV(s, what string) (string, string, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return "", "", fmt.Errorf("--%s %q: want key=value", what, s)
	}
	return k, v, nil
}

func (c *dispatchCmd) run(ctx context.Context, e *env) error {
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
	keys, err := e.need("HERALD_SECRET_KEYS", "set it to the workers' kid:base64key list")
	if err != nil {
		return err
	}
	opts := []tasks.Option{tasks.Actor(c.Actor)}
	if c.IdempotencyKey != "" {
		opts = append(opts, tasks.IdempotencyKey(c.IdempotencyKey))
	}
	if c.Tx {
		pool, err := e.db(ctx)
		if err != nil {
			return err
		}
		defer pool.Close()
		client, err := tasks.NewClient(tasks.ClientConfig{SecretKeys: keys, Queue: e.queue()})
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
		return e.print(res, func(w io.Writer) {
			if res.Duplicate {
				fmt.Fprintf(w, "%s (duplicate: the idempotency key was already used with the same arguments)\n", res.ID)
				return
			}
			fmt.Fprintln(w, res.ID)
		})
	}
	ropt, err := e.redis()
	if err != nil {
		return err
	}
	if err := cli.PingRedis(ctx, ropt); err != nil {
		return err
	}
	client, err := tasks.NewClient(tasks.ClientConfig{Redis: ropt, SecretKeys: keys, Queue: e.queue()})
	if err != nil {
		return err
	}
	defer func() { _ = client.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	id, err := client.Dispatch(ctx, c.Event, refs, vars, opts...)
	if err != nil {
		return err
	}
	return e.print(map[string]string{"id": id}, func(w io.Writer) { fmt.Fprintln(w, id) })
}

type receiptView struct {
	ID          string     `json:"id"`
	Channel     string     `json:"channel"`
	Transport   string     `json:"transport"`
	Recipient   string     `json:"recipient"`
	Status      string     `json:"status"`
	Attempt     int        `json:"attempt"`
	DueAt       time.Time  `json:"due_at"`
	SentAt      *time.Time `json:"sent_at,omitempty"`
	InDoubt     bool       `json:"in_doubt,omitempty"`
	MessageID   string     `json:"message_id,omitempty"`
	Subject     string     `json:"subject,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	Response    string     `json:"provider_response,omitempty"`
	DispatchID  string     `json:"dispatch_id"`
	RecipientID string     `json:"recipient_id"`
}

func viewReceipt(r *receipts.Receipt) receiptView {
	return receiptView{ID: r.ID, Channel: r.ChannelKey, Transport: r.Transport, Recipient: r.Recipient.Address, Status: string(r.Status),
		Attempt: r.Attempt, DueAt: r.DueAt, SentAt: r.SentAt, InDoubt: r.InDoubt, MessageID: r.MessageID, Subject: r.Subject,
		LastError: r.LastError, Response: r.ProviderResponse, DispatchID: r.DispatchID, RecipientID: r.RecipientID}
}

type statusView struct {
	ID          string        `json:"id"`
	State       string        `json:"status"`
	Event       string        `json:"event_id,omitempty"`
	Attempt     int           `json:"attempt"`
	AcceptedAt  *time.Time    `json:"accepted_at,omitempty"`
	LastError   string        `json:"last_error,omitempty"`
	DuplicateOf string        `json:"duplicate_of,omitempty"`
	Receipts    []receiptView `json:"receipts"`
}

func (c *statusCmd) run(ctx context.Context, e *env) error {
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	d, err := store.GetDispatch(ctx, c.ID)
	if errors.Is(err, receipts.ErrNotFound) {
		queued, qerr := e.queued(ctx, c.ID)
		if qerr != nil {
			return qerr
		}
		if queued {
			v := statusView{ID: c.ID, State: "queued", Receipts: []receiptView{}}
			return e.print(v, func(w io.Writer) { fmt.Fprintf(w, "dispatch %s: queued, not yet picked up by a worker\n", c.ID) })
		}
		return fmt.Errorf("dispatch %s: not found in PostgreSQL nor queued in Redis", c.ID)
	}
	if err != nil {
		return err
	}
	rs, err := store.ListReceipts(ctx, d.ID)
	if err != nil {
		return err
	}
	v := statusView{ID: d.ID, State: string(d.Status), Event: d.EventID, Attempt: d.Attempt, AcceptedAt: &d.AcceptedAt,
		LastError: d.LastError, DuplicateOf: d.DuplicateOf, Receipts: []receiptView{}}
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

func (c *receiptShowCmd) run(ctx context.Context, e *env) error {
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	r, err := store.GetReceipt(ctx, c.ID)
	if err != nil {
		return err
	}
	v := viewReceipt(r)
	return e.print(v, func(w io.Writer) {
		fmt.Fprintf(w, "receipt %s\n  dispatch    %s\n  event       %s\n  channel     %s (%s)\n  recipient   %s (%s)\n  status      %s (attempt %d of %d)\n  due         %s\n",
			r.ID, r.DispatchID, r.EventID, r.ChannelKey, r.Transport, r.Recipient.Address, r.RecipientID, r.Status, r.Attempt, r.MaxAttempts,
			r.DueAt.Local().Format(time.DateTime))
		if r.SentAt != nil {
			fmt.Fprintf(w, "  sent        %s\n", r.SentAt.Local().Format(time.DateTime))
		}
		for _, kv := range [][2]string{{"subject", r.Subject}, {"message-id", r.MessageID}, {"response", r.ProviderResponse}, {"last error", r.LastError}} {
			if kv[1] != "" {
				fmt.Fprintf(w, "  %-11s %s\n", kv[0], kv[1])
			}
		}
		if r.InDoubt {
			fmt.Fprintln(w, "  in doubt    yes: reclaimed after a worker stopped mid-send; a duplicate is possible (same Message-ID)")
		}
	})
}

func (c *mailboxListCmd) run(ctx context.Context, e *env) error {
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	ms, err := store.ListMail(ctx, c.Limit)
	if err != nil {
		return err
	}
	type row struct {
		ID        int64     `json:"id"`
		To        string    `json:"to"`
		Subject   string    `json:"subject"`
		ReceiptID string    `json:"receipt_id"`
		At        time.Time `json:"created_at"`
	}
	rows := []row{}
	for _, m := range ms {
		rows = append(rows, row{m.ID, m.To, m.Subject, m.ReceiptID, m.CreatedAt})
	}
	return e.print(rows, func(w io.Writer) {
		if len(rows) == 0 {
			fmt.Fprintln(w, "the development mailbox is empty")
			return
		}
		for _, r := range rows {
			fmt.Fprintf(w, "%-5s %s  %-30s %s\n", strconv.FormatInt(r.ID, 10), r.At.Local().Format(time.TimeOnly), r.To, r.Subject)
		}
	})
}

func (c *mailboxShowCmd) run(ctx context.Context, e *env) error {
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	m, err := store.GetMail(ctx, c.ID)
	if err != nil {
		return err
	}
	return e.print(m, func(w io.Writer) {
		fmt.Fprintf(w, "From:       %s\nTo:         %s\nSubject:    %s\nMessage-ID: %s\nReceipt:    %s\n\n%s\n", m.From, m.To, m.Subject, m.MessageID, m.ReceiptID, m.Text)
		if m.HTML != "" {
			fmt.Fprintf(w, "\n--- HTML (%d bytes) ---\n%s\n", len(m.HTML), m.HTML)
		}
	})
}

func (c *cancelCmd) run(ctx context.Context, e *env) error {
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	if _, err := store.GetDispatch(ctx, c.ID); err != nil {
		return err
	}
	n, err := store.CancelReceipts(ctx, c.ID, c.Reason)
	if err != nil {
		return err
	}
	return e.print(map[string]any{"id": c.ID, "canceled": n}, func(w io.Writer) {
		fmt.Fprintf(w, "dispatch %s: %d deliver%s canceled\n", c.ID, n, map[bool]string{true: "y", false: "ies"}[n == 1])
	})
}

func (c *receiptCancelCmd) run(ctx context.Context, e *env) error {
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := store.SetStatus(ctx, receipts.KindReceipt, c.ID, receipts.ReceiptCanceled, c.Reason); err != nil {
		if errors.Is(err, receipts.ErrTransition) {
			st, _ := store.Status(ctx, receipts.KindReceipt, c.ID)
			if st == "" {
				return fmt.Errorf("receipt %s: %w", c.ID, receipts.ErrNotFound)
			}
			return fmt.Errorf("receipt %s is %s: only scheduled or retrying deliveries can be canceled", c.ID, st)
		}
		return err
	}
	return e.print(map[string]string{"id": c.ID, "status": "canceled"}, func(w io.Writer) {
		fmt.Fprintf(w, "receipt %s: canceled\n", c.ID)
	})
}

func (c *rejectedCmd) run(ctx context.Context, e *env) error {
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	rt, err := store.ListRejectedTasks(ctx, c.Limit)
	if err != nil {
		return err
	}
	if rt == nil {
		rt = []receipts.RejectedTask{}
	}
	return e.print(rt, func(w io.Writer) {
		if len(rt) == 0 {
			fmt.Fprintln(w, "no rejected tasks")
			return
		}
		for _, t := range rt {
			fmt.Fprintf(w, "%s  %-15s %-50s %s\n", t.CreatedAt.Local().Format(time.DateTime), t.TaskType, t.TaskID, t.Reason)
		}
	})
}
