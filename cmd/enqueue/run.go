package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/alecthomas/kong"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/ledger"
)

// root is enqueue's grammar: the global flags, then one field per command or group of
// commands; each command is a type with a Run method, in the file named after the command.
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

// env is what every command reads its settings from.
type env struct {
	getenv func(string) string
	cfg    herald.Config // the settings, read through herald's one Config (defaults applied)
	file   string        // the settings file read, if any
	out    io.Writer
	errOut io.Writer
	json   bool
}

// run parses args, reads the settings (getenv, else the settings file), and runs the command
// chosen, each of which is a type with a Run method in the file named after it.
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
	sel := kctx.Selected()
	if sel == nil { // cli.Parse answers a missing command itself; this is a guard
		return fmt.Errorf("unknown command %q", kctx.Command())
	}
	var cfgErr error
	e.cfg, cfgErr = herald.ClientConfigFromEnv(get)
	if cfgErr != nil {
		// A command that enqueues takes the producer's settings (queue, retries, timeouts, keys)
		// and refuses bad ones; one that only reads carries on (an operator diagnosing a worker
		// that refuses its settings needs the CLI most), saying what is wrong.
		if _, enqueues := sel.Target.Addr().Interface().(enqueuer); enqueues {
			return cfgErr
		}
		fmt.Fprintf(stderr, "enqueue: warning: %v (this command does not use it)\n", cfgErr)
	}
	// kong calls the selected command's Run method, binding ctx and e to its parameters.
	// RunNode, not Run: Run joins the command's error with the AfterRun hooks' (errors.Join),
	// and the command's error must reach main as it is.
	kctx.BindTo(ctx, (*context.Context)(nil))
	return kctx.RunNode(sel, e)
}

// enqueuer is a command that enqueues tasks: it needs every producer setting to be valid.
type enqueuer interface{ enqueues() }

func (*dispatchCmd) enqueues()        {}
func (*rejectedRequeueCmd) enqueues() {}

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

// need returns the setting key, or an error naming it, where it was looked for, and hint.
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

// redis returns the Redis connection named by HERALD_REDIS_URL.
func (e *env) redis() (asynq.RedisConnOpt, error) {
	if _, err := e.need("HERALD_REDIS_URL", "set it to redis://host:6379/0"); err != nil {
		return nil, err
	}
	opt, err := asynq.ParseRedisURI(e.cfg.RedisURL)
	if err != nil {
		return nil, errors.New("HERALD_REDIS_URL is not a valid redis:// URL")
	}
	return opt, nil
}

// db opens the PostgreSQL pool named by HERALD_DATABASE_URL.
func (e *env) db(ctx context.Context) (*pgxpool.Pool, error) {
	if _, err := e.need("HERALD_DATABASE_URL", "set it to postgres://user:pass@host:5432/dbname"); err != nil {
		return nil, err
	}
	return herald.OpenDB(ctx, e.cfg.DatabaseURL)
}

// store opens the database named by HERALD_DATABASE_URL; done closes it.
func (e *env) store(ctx context.Context) (*ledger.Store, func(), error) {
	pool, err := e.db(ctx)
	if err != nil {
		return nil, nil, err
	}
	return ledger.New(pool), pool.Close, nil
}

// queue is the asynq queue of HERALD_QUEUE, "herald" by default.
func (e *env) queue() string { return e.cfg.Queue }

// secretKeys checks that HERALD_SECRET_KEYS is set, for the commands that seal or open secrets.
func (e *env) secretKeys() error {
	_, err := e.need("HERALD_SECRET_KEYS", "set it to the workers' kid:base64key list")
	return err
}

// print prints v as indented JSON with --json, else calls text.
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
