package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
)

type root struct {
	EnvFile    *string       `name:"env-file" help:"File of KEY=value settings for variables not set in the environment. Default: the checkout's .herald/dev.env (see enqueue --help)." placeholder:"FILE"`
	JSON       bool          `help:"Print JSON (snake_case keys) instead of text."`
	Dispatch   dispatchCmd   `cmd:"" help:"Dispatch an event; prints the dispatch id."`
	Status     statusCmd     `cmd:"" help:"Show a dispatch and its receipts."`
	Cancel     cancelCmd     `cmd:"" help:"Cancel a dispatch at any stage: still queued in Redis, waiting to retry, fanning out, or with deliveries that have not started. A delivery being sent finishes."`
	Dispatches dispatchesCmd `cmd:"" help:"List dispatches, newest first (--status failed: those whose fan-out failed, with the reason)."`
	Receipts   receiptsCmd   `cmd:"" help:"Inspect and cancel receipts (deliveries)."`
	Rejected   rejectedCmd   `cmd:"" help:"List rejected tasks (payloads too broken to have a dispatch row, tasks naming a dispatch or receipt that does not exist, tasks held for a newer worker); requeue a held one."`
	Mailbox    mailboxCmd    `cmd:"" help:"Read the development mailbox (HERALD_SMTP_URL=capture://)."`
	Erase      eraseCmd      `cmd:"" help:"Erase one recipient's personal data from every Herald table and from the queued tasks; keeps what proves a delivery happened, and writes an audit row."`
	Help       cli.Help      `cmd:"" help:"Show this usage, or one command's: enqueue help receipts list."`
}

// description is the top of `enqueue --help`.
const description = `Herald's ops CLI: dispatch events, inspect dispatches, receipts and the development mailbox, erase a recipient's personal data.

Settings come from HERALD_* variables, else from .herald/dev.env (written by make run; looked for in the current folder and its parents up to the repository root, then in the checkout holding this binary), or from --env-file FILE.

Why did a message not arrive? "enqueue status ID" shows a dispatch and each delivery; "enqueue dispatches --status failed" and "enqueue receipts list --status failed" list what failed, with the reason; "enqueue rejected" lists tasks that never became a dispatch or a receipt.`

type dispatchCmd struct {
	Event          string   `arg:"" help:"Event id, such as accounts.password_reset."`
	Ref            []string `sep:"none" help:"Data reference name=resource/id, such as user=users/42. Repeat the flag for more." placeholder:"NAME=RESOURCE/ID"`
	Var            []string `sep:"none" help:"Variable key=value (a string, commas included), or key:=JSON (a number, object, …). Repeat the flag for more." placeholder:"KEY=VALUE"`
	Secret         []string `sep:"none" help:"Secret variable key=value: sealed before it leaves this process, never logged. Repeat the flag for more." placeholder:"KEY=VALUE"`
	IdempotencyKey string   `help:"Idempotency key: a repeat within the window is the first dispatch." placeholder:"KEY"`
	Tx             bool     `help:"Record the dispatch in PostgreSQL (the outbox path) instead of enqueueing it in Redis; idempotency is answered at once (a repeat prints the first id, and a note on stderr)."`
	Actor          string   `help:"Who is dispatching, recorded on the dispatch." default:"cli"`
}

type statusCmd struct {
	ID string `arg:"" help:"Dispatch id."`
}

type receiptsCmd struct {
	Show   receiptShowCmd   `cmd:"" help:"Show one receipt."`
	List   receiptListCmd   `cmd:"" help:"List receipts, newest first (--status failed: deliveries that failed, with the reason)."`
	Cancel receiptCancelCmd `cmd:"" help:"Cancel one delivery that has not started."`
}

type dispatchesCmd struct {
	Status string `help:"Only dispatches in this state: ${dispatch_states}." placeholder:"STATE"`
	Event  string `help:"Only dispatches of this event id." placeholder:"EVENT"`
	Limit  int    `help:"How many, newest first (1 to ${max_limit})." default:"20"`
}

type receiptListCmd struct {
	Status   string `help:"Only receipts in this state: ${receipt_states}." placeholder:"STATE"`
	Dispatch string `help:"Only the receipts of this dispatch id." placeholder:"ID"`
	Limit    int    `help:"How many, newest first (1 to ${max_limit})." default:"20"`
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
	List    rejectedListCmd    `cmd:"" default:"withargs" help:"List rejected tasks, newest first (the default: enqueue rejected)."`
	Requeue rejectedRequeueCmd `cmd:"" help:"Enqueue again a task held for a newer worker (its payload was kept), once the fleet is upgraded."`
}

type rejectedListCmd struct {
	Limit int `help:"How many, newest first." default:"20"`
}

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

type receiptShowCmd struct {
	ID string `arg:"" help:"Receipt id."`
}

type eraseCmd struct {
	Recipient string `required:"" help:"The recipient: one whole address (any letter case; a domain or part of an address is refused) or a recipient id." placeholder:"ADDRESS_OR_ID"`
	Actor     string `help:"Who asks for the erasure, recorded in the audit log." default:"cli"`
}

// Help is the detail of `enqueue erase --help`.
func (eraseCmd) Help() string {
	return "Deletes or irreversibly redacts what Herald holds about one recipient: their deliveries lose the recipient, " +
		"recipient id and subject, and their address and name are cut out of errors and replies; deliveries to them that " +
		"have not started are canceled; dispatches lose the variables and secrets naming them (open ones are canceled); " +
		"their captured mail is deleted; rejected tasks lose the reason and kept payload naming them; dispatch tasks " +
		"naming them that still wait in the queue (HERALD_QUEUE) are canceled and deleted. Ids, times, states, attempts " +
		"and Message-IDs stay, so a delivery can still be proven. One audit row records the actor and the counts, never " +
		"the address. A delivery being sent right now cannot be taken back: it is left as it is, and the command fails " +
		"asking to run it again once it has settled; running it again is always safe. Erase the person in the " +
		"application first, or new dispatches will name them again."
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
	file   string // the settings file read, if any
	out    io.Writer
	errOut io.Writer
	json   bool
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var r root
	kctx, done, err := cli.Parse(&r, "enqueue", description, args, stdout, stderr, kong.Vars{
		"dispatch_states": states(ledger.KindDispatch), "receipt_states": states(ledger.KindReceipt),
		"max_limit": strconv.Itoa(ledger.MaxListLimit),
	})
	if done {
		return err
	}
	file := ""
	if r.EnvFile != nil {
		file = *r.EnvFile
	} else {
		file = cli.FindDevEnv(workDir(), binDir())
	}
	get, err := cli.Env(getenv, file)
	if err != nil {
		return err
	}
	e := &env{getenv: get, file: file, out: stdout, errOut: stderr, json: r.JSON}
	switch kctx.Command() {
	case "dispatch <event>":
		return r.Dispatch.run(ctx, e)
	case "status <id>":
		return r.Status.run(ctx, e)
	case "dispatches":
		return r.Dispatches.run(ctx, e)
	case "receipts show <id>":
		return r.Receipts.Show.run(ctx, e)
	case "receipts list":
		return r.Receipts.List.run(ctx, e)
	case "receipts cancel <id>":
		return r.Receipts.Cancel.run(ctx, e)
	case "cancel <id>":
		return r.Cancel.run(ctx, e)
	case "rejected", "rejected list":
		return r.Rejected.List.run(ctx, e)
	case "rejected requeue <id>":
		return r.Rejected.Requeue.run(ctx, e)
	case "mailbox list":
		return r.Mailbox.List.run(ctx, e)
	case "mailbox show <id>":
		return r.Mailbox.Show.run(ctx, e)
	case "erase":
		return r.Erase.run(ctx, e)
	}
	return fmt.Errorf("unknown command %q", kctx.Command())
}

// workDir is the current folder, or "" when it cannot be told.
func workDir() string {
	d, _ := os.Getwd()
	return d
}

// binDir is the folder of this program (bin/ of a checkout after make build), or "".
func binDir() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	return filepath.Dir(exe)
}

// states lists kind's states for help texts.
func states(kind ledger.Kind) string {
	var out []string
	for _, s := range ledger.States(kind) {
		out = append(out, string(s))
	}
	return strings.Join(out, ", ")
}

// parseStatus checks a --status value against kind's states.
func parseStatus(kind ledger.Kind, s string) (ledger.Status, error) {
	if s == "" || slices.Contains(ledger.States(kind), ledger.Status(s)) {
		return ledger.Status(s), nil
	}
	return "", fmt.Errorf("--status %q: not a %s state; want one of %s", s, kind, states(kind))
}

// parseLimit checks a --limit value.
func parseLimit(n int) (int, error) {
	if n < 1 || n > ledger.MaxListLimit {
		return 0, fmt.Errorf("--limit %d: want 1 to %d", n, ledger.MaxListLimit)
	}
	return n, nil
}

// parseID returns a dispatch or receipt id in canonical form, refusing anything that is not a
// UUID before PostgreSQL sees it.
func parseID(what, id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return "", fmt.Errorf("%q is not a valid id: a %s id is a UUID, such as 01a2203a-c569-7ae3-b0c8-f27792223ad5", id, what)
	}
	return u.String(), nil
}

func (e *env) need(key, hint string) (string, error) {
	v := e.getenv(key)
	if v != "" {
		return v, nil
	}
	if e.file != "" {
		return "", fmt.Errorf("%s is not set, in the environment nor in %s: %s", key, e.file, hint)
	}
	return "", fmt.Errorf("%s is not set: %s (or run `make run` in the repository, which writes .herald/dev.env)", key, hint)
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
func (e *env) store(ctx context.Context) (*ledger.Store, func(), error) {
	pool, err := e.db(ctx)
	if err != nil {
		return nil, nil, err
	}
	return ledger.New(pool), pool.Close, nil
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
		enc.SetEscapeHTML(false) // "<a@b>" stays readable
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

func viewReceipt(r *ledger.ReceiptRow) receiptView {
	return receiptView{ID: r.ID, Channel: r.ChannelKey, Transport: r.Transport, Recipient: r.Recipient.Address, Status: string(r.Status),
		Attempt: r.Attempt, DueAt: r.DueAt, SentAt: r.SentAt, InDoubt: r.InDoubt, MessageID: r.MessageID, Subject: r.Subject,
		LastError: r.LastError, Response: r.ProviderResponse, DispatchID: r.DispatchID, RecipientID: r.RecipientID}
}

// dispatchView is a dispatch as the CLI prints it in JSON.
type dispatchView struct {
	ID          string     `json:"id"`
	State       string     `json:"status"`
	Event       string     `json:"event_id,omitempty"`
	Attempt     int        `json:"attempt"`
	AcceptedAt  *time.Time `json:"accepted_at,omitempty"`
	UpdatedAt   *time.Time `json:"updated_at,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	DuplicateOf string     `json:"duplicate_of,omitempty"`
}

func viewDispatch(d *ledger.DispatchRow) dispatchView {
	return dispatchView{ID: d.ID, State: string(d.Status), Event: d.EventID, Attempt: d.Attempt, AcceptedAt: &d.AcceptedAt,
		UpdatedAt: &d.UpdatedAt, LastError: d.LastError, DuplicateOf: d.DuplicateOf}
}

type statusView struct {
	dispatchView
	Receipts []receiptView `json:"receipts"`
}

func (c *statusCmd) run(ctx context.Context, e *env) error {
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

func (c *receiptShowCmd) run(ctx context.Context, e *env) error {
	id, err := parseID("receipt", c.ID)
	if err != nil {
		return err
	}
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	r, err := store.GetReceipt(ctx, id)
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
	v := struct {
		ID        int64     `json:"id"`
		ReceiptID string    `json:"receipt_id"`
		MessageID string    `json:"message_id"`
		From      string    `json:"from"`
		To        string    `json:"to"`
		Subject   string    `json:"subject"`
		Text      string    `json:"text"`
		HTML      string    `json:"html"`
		At        time.Time `json:"created_at"`
	}{m.ID, m.ReceiptID, m.MessageID, m.From, m.To, m.Subject, m.Text, m.HTML, m.CreatedAt}
	return e.print(v, func(w io.Writer) {
		fmt.Fprintf(w, "From:       %s\nTo:         %s\nSubject:    %s\nMessage-ID: %s\nReceipt:    %s\n\n%s\n", m.From, m.To, m.Subject, m.MessageID, m.ReceiptID, m.Text)
		if m.HTML != "" {
			fmt.Fprintf(w, "\n--- HTML (%d bytes) ---\n%s\n", len(m.HTML), m.HTML)
		}
	})
}

func (c *cancelCmd) run(ctx context.Context, e *env) error {
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

// plural returns one when n is 1, else many: the ending of a counted word.
func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func (c *receiptCancelCmd) run(ctx context.Context, e *env) error {
	id, err := parseID("receipt", c.ID)
	if err != nil {
		return err
	}
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := store.SetStatus(ctx, ledger.KindReceipt, id, ledger.ReceiptCanceled, c.Reason); err != nil {
		if errors.Is(err, ledger.ErrTransition) {
			st, _ := store.Status(ctx, ledger.KindReceipt, id)
			if st == "" {
				return fmt.Errorf("receipt %s: %w", id, ledger.ErrNotFound)
			}
			return fmt.Errorf("receipt %s is %s: only scheduled or retrying deliveries can be canceled", id, st)
		}
		return err
	}
	return e.print(map[string]string{"id": id, "status": "canceled"}, func(w io.Writer) {
		fmt.Fprintf(w, "receipt %s: canceled\n", id)
	})
}

func (c *dispatchesCmd) run(ctx context.Context, e *env) error {
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

// printList prints rows as JSON views, or a line each (none when there are none).
func printList[R, V any](e *env, rows []R, view func(R) V, none string, line func(io.Writer, R)) error {
	views := make([]V, 0, len(rows))
	for _, r := range rows {
		views = append(views, view(r))
	}
	return e.print(views, func(w io.Writer) {
		if len(rows) == 0 {
			fmt.Fprintln(w, none)
			return
		}
		for _, r := range rows {
			line(w, r)
		}
	})
}

func (c *receiptListCmd) run(ctx context.Context, e *env) error {
	st, err := parseStatus(ledger.KindReceipt, c.Status)
	if err != nil {
		return err
	}
	limit, err := parseLimit(c.Limit)
	if err != nil {
		return err
	}
	dispatchID := ""
	if c.Dispatch != "" {
		if dispatchID, err = parseID("dispatch", c.Dispatch); err != nil {
			return fmt.Errorf("--dispatch: %w", err)
		}
	}
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	rs, err := store.FindReceipts(ctx, ledger.ReceiptFilter{Status: st, DispatchID: dispatchID, Limit: limit})
	if err != nil {
		return err
	}
	return printList(e, rs, viewReceipt, "no receipts", func(w io.Writer, r *ledger.ReceiptRow) {
		doubt := ""
		if r.InDoubt {
			doubt = "  (in doubt)"
		}
		fmt.Fprintf(w, "%s  %s  %-9s %-8s %-24s attempt %d%s%s\n", r.CreatedAt.Local().Format(time.DateTime), r.ID, r.Status,
			r.ChannelKey, r.Recipient.Address, r.Attempt, reason(r.LastError), doubt)
	})
}

// reason formats a last error for the end of a text line.
func reason(s string) string {
	if s == "" {
		return ""
	}
	return "  — " + s
}

func (c *rejectedListCmd) run(ctx context.Context, e *env) error {
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

func (c *rejectedRequeueCmd) run(ctx context.Context, e *env) error {
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
	keys, err := e.need("HERALD_SECRET_KEYS", "set it to the workers' kid:base64key list")
	if err != nil {
		return err
	}
	client, err := tasks.NewClient(tasks.ClientConfig{Redis: ropt, DB: pool, SecretKeys: keys, Queue: e.queue()})
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

// errEraseIncomplete is returned when an erasure left rows that were still changing.
var errEraseIncomplete = errors.New("erasure incomplete")

func (c *eraseCmd) run(ctx context.Context, e *env) error {
	who := strings.TrimSpace(c.Recipient)
	if who == "" {
		return errors.New("--recipient is empty: give an address or a recipient id")
	}
	ropt, err := e.redis()
	if err != nil {
		return err
	}
	if err := cli.PingRedis(ctx, ropt); err != nil {
		return err
	}
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	// Redis first: the addresses come from the receipts, which the erasure then redacts.
	addrs, err := store.RecipientAddresses(ctx, who)
	if err != nil {
		return err
	}
	q, err := tasks.EraseQueued(ctx, ropt, store, e.queue(), addrs)
	if err != nil {
		return err
	}
	er, err := store.EraseRecipient(ctx, ledger.EraseRequest{Who: who, Actor: c.Actor, QueuedDeleted: q.Deleted, QueuedActive: q.Active})
	if err != nil {
		return err
	}
	v := struct {
		ledger.Erasure
		Complete bool `json:"complete"`
	}{er, er.Complete()}
	if err := e.print(v, func(w io.Writer) { printErasure(w, er, c.Actor) }); err != nil {
		return err
	}
	if er.Complete() {
		return nil
	}
	// Never the address or id in a message: errors end up in logs.
	fmt.Fprintf(e.errOut, "warning: %d deliver%s being sent or fanned out, %d dispatch%s still open and %d queued task%s running "+
		"were left as they are: they cannot be taken back while they change\n",
		er.InFlight, plural(er.InFlight, "y", "ies"), er.OpenDispatches, plural(er.OpenDispatches, "", "es"), er.QueuedActive, plural(er.QueuedActive, "", "s"))
	return fmt.Errorf("%w: run the same enqueue erase again once they have settled (a few seconds; a fan-out in progress, minutes)",
		errEraseIncomplete)
}

// printErasure prints what an erasure did, table by table.
func printErasure(w io.Writer, er ledger.Erasure, actor string) {
	fmt.Fprintf(w, "erasure recorded as audit entry %d (actor %s)\n", er.AuditID, actor)
	fmt.Fprintf(w, "  receipts        %d erased, %d canceled before sending, %d of other recipients redacted\n",
		er.ReceiptsErased, er.ReceiptsCanceled, er.ReceiptsRedacted)
	fmt.Fprintf(w, "  dispatches      %d redacted, %d canceled, secrets dropped from %d\n",
		er.DispatchesRedacted, er.DispatchesCanceled, er.SecretsDropped)
	fmt.Fprintf(w, "  dev_mailbox     %d deleted, %d redacted\n", er.MailDeleted, er.MailRedacted)
	fmt.Fprintf(w, "  rejected_tasks  %d redacted, %d kept payload%s dropped\n", er.RejectedRedacted, er.PayloadsDropped, plural(er.PayloadsDropped, "", "s"))
	fmt.Fprintf(w, "  queue           %d queued dispatch%s canceled and deleted\n", er.QueuedDeleted, plural(er.QueuedDeleted, "", "es"))
}
