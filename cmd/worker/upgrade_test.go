package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// prevRelease is the commit of the previous Herald release, whose worker TestRollingUpgrade runs
// beside the current one. Move it forward at each release.
const prevRelease = "b3dd515e3a8988e791fb0fb30562d050b539ad46"

// prevStartsOnNewerSchema says whether the previous release's worker starts with
// HERALD_MIGRATE=auto on a schema a newer release has migrated. b3dd515 does not: its migrator
// (tern) refuses a schema_version above the migrations it knows ("current version 11 is outside
// the valid versions of 0 to 7") and the worker exits. So, upgrading from it, an old worker that
// restarts during the rolling deploy needs HERALD_MIGRATE=off (the CHANGELOG's upgrade note).
// ledger.MigrateFS now leaves a newer schema alone: set this to true once prevRelease has that.
const prevStartsOnNewerSchema = false

// Rows loaded beside the test's own traffic, so that the migrations run on tables of a realistic
// size: final dispatches with three final receipts each, and open receipts due tomorrow.
const (
	loadedDispatches = 100_000
	loadedOpen       = 3_000
	users            = 20_000 // the producer sends to user 1, 2, … in turn, one dispatch each
	enough           = 25     // deliveries each worker must send in each stage
)

// TestRollingUpgrade is a rolling deploy from the previous release under load. A worker of the
// previous release serves a queue of its own database while a producer keeps dispatching and
// 400,000 rows are loaded; a worker of this release starts beside it and applies the newer
// migrations; both serve together; the old worker restarts once on the newer schema. While the
// new worker migrates, no other session (the old worker, the producer, a write probe) waits on
// its locks for blockBound, and the old worker keeps sending. Then every dispatch is final with
// one email per receipt, no table was rewritten, no index is left invalid, the schema is at this
// release's last migration, and each worker sent mail on the newer schema.
func TestRollingUpgrade(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	prev := buildPrevWorker(t)
	binaries(t)

	rec := emailtest.Start(t)
	dbURL, queue := freshDatabase(t), testenv.Queue(t)
	keys := "dev1:" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	base := append(os.Environ(),
		"HERALD_REDIS_URL="+testenv.RedisURL(t),
		"HERALD_DATABASE_URL="+withApp(t, dbURL, appPrev),
		"HERALD_QUEUE="+queue,
		"HERALD_SMTP_URL="+rec.URL(),
		"HERALD_MAIL_FROM=Herald <noreply@herald.test>",
		"HERALD_SECRET_KEYS="+keys,
		"HERALD_HTTP_ADDR=127.0.0.1:0", // for /metrics: who sent what
		"HERALD_LOG_FORMAT=json",
		"HERALD_EXAMPLE_RESET_KEY="+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
		"HERALD_CONCURRENCY=4",
		"HERALD_SEND_TIMEOUT=2s", "HERALD_TASK_TIMEOUT=7s", "HERALD_LEASE=8s", "HERALD_SHUTDOWN_TIMEOUT=7s",
		"HERALD_PROMOTER_INTERVAL=200ms", "HERALD_BACKOFF_MIN=200ms", "HERALD_BACKOFF_MAX=1s",
	)
	env := func(migrate string) []string { return append(slices.Clone(base), "HERALD_MIGRATE="+migrate) }
	var all []*proc
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, all)
		}
	})

	old := startBinary(t, prev, env("auto")) // creates the schema at the previous release's version
	all = append(all, old)
	db, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	t.Logf("previous release %.7s migrated to version %d", prevRelease, schemaVersion(t, db))
	if _, err := db.Exec(ctx, `INSERT INTO herald_example.users (id, email, name)
		SELECT i::text, 'user' || i || '@example.com', 'User ' || i FROM generate_series(1, $1) i`, users); err != nil {
		t.Fatal(err)
	}
	client, err := herald.NewClient(herald.Config{Redis: testenv.RedisOpt(t), SecretKeys: keys, Queue: queue, TaskTimeout: 7 * time.Second, SendTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	prod := startProducer(t, client, db)

	load(t, db, queue)
	nodes := relfilenodes(t, db)

	known, err := fs.Glob(ledger.Migrations(), "*.sql")
	if err != nil {
		t.Fatal(err)
	}

	// This release's worker applies its migrations while the old one serves, the producer
	// produces and a probe writes, all watched for waits on the migrating worker's locks; then
	// both workers serve together: each sends mail on the newer schema.
	watch := watchLocks(t, dbURL)
	probe := startProbe(t, dbURL)
	oldAtLaunch := sentBy(t, old)
	launched := time.Now()
	cur := launch(t, filepath.Join(binaries(t), "worker"), append(env("auto"), "HERALD_DATABASE_URL="+withApp(t, dbURL, appCur)))
	all = append(all, cur)
	last, lastAt, gap := oldAtLaunch, launched, time.Duration(0) // the old worker's longest time without a send
	for serving := false; !serving; {
		select {
		case <-cur.started:
			serving = true
		case <-cur.done:
			t.Fatalf("this release's worker exited: %v\n%s", cur.err, cur.logs.String())
		case <-time.After(100 * time.Millisecond):
			if time.Since(launched) > 30*time.Second {
				t.Fatal("this release's worker did not start (migrate) within 30s")
			}
		}
		if n := sentBy(t, old); n > last {
			last, lastAt = n, time.Now()
		}
		gap = max(gap, time.Since(lastAt))
	}
	window := time.Since(launched)
	watch.stop(t, db, len(known))
	probe.stop(t)
	if during := last - oldAtLaunch; during == 0 && window >= progressWindow {
		t.Errorf("the old worker sent nothing in the %v this release's worker took to migrate: the migration stopped it",
			window.Round(time.Millisecond))
	}
	t.Logf("migration window %v: the old worker sent %d, its longest time without a send %v",
		window.Round(time.Millisecond), last-oldAtLaunch, gap.Round(time.Millisecond))
	oldBefore := sentBy(t, old)
	testenv.WaitFor(t, time.Minute, "both workers send on the newer schema", func() bool {
		return sentBy(t, old) >= oldBefore+enough && sentBy(t, cur) >= enough
	})

	// The old worker restarts once, on the newer schema.
	select {
	case <-old.done:
		t.Fatalf("the old worker exited while serving beside the new one: %v", old.err)
	default:
	}
	oldSent := sentBy(t, old)
	_ = old.cmd.Process.Signal(syscall.SIGINT)
	if err := old.wait(t, 30*time.Second); err != nil {
		t.Fatalf("the old worker's shutdown: %v", err)
	}
	migrate := "auto"
	if !prevStartsOnNewerSchema {
		refused := launch(t, prev, env("auto"))
		all = append(all, refused)
		select {
		case <-refused.started:
			t.Fatal("the previous release started with HERALD_MIGRATE=auto on the newer schema: set prevStartsOnNewerSchema")
		case <-refused.done:
		case <-time.After(30 * time.Second):
			t.Fatal("the previous release neither started nor exited on the newer schema")
		}
		if refused.err == nil || !strings.Contains(refused.logs.String(), "outside the valid versions") {
			t.Fatalf("the previous release on the newer schema, HERALD_MIGRATE=auto: exit %v, want tern's version refusal\n%s", refused.err, refused.logs.String())
		}
		t.Logf("the previous release refuses the newer schema with HERALD_MIGRATE=auto (%v): %s", refused.err, lastLine(refused.logs.String()))
		migrate = "off"
	}
	restarted := startBinary(t, prev, env(migrate))
	all = append(all, restarted)
	testenv.WaitFor(t, time.Minute, "the restarted old worker sends", func() bool { return sentBy(t, restarted) >= enough })

	ids := prod.stop(t)
	waitFinal(t, db, ids)

	checkOneEmailEach(t, db, ids, rec.Messages())
	if after := relfilenodes(t, db); !maps.Equal(nodes, after) {
		t.Errorf("a table was rewritten by the migrations: relfilenode %v before, %v after", nodes, after)
	}
	var invalid []string
	rows, err := db.Query(ctx, `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'herald' AND NOT i.indisvalid`)
	if err == nil {
		invalid, err = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	if err != nil || len(invalid) > 0 {
		t.Errorf("invalid indexes left in herald: %v (%v)", invalid, err)
	}
	if v := schemaVersion(t, db); v != len(known) {
		t.Errorf("schema_version %d, want %d (this release's last migration)", v, len(known))
	}
	t.Logf("%d dispatches; sent by: old worker %d (%d of them beside the new one), new worker %d, restarted old worker %d",
		len(ids), oldSent, oldSent-oldBefore, sentBy(t, cur), sentBy(t, restarted))
}

// buildPrevWorker builds the worker of prevRelease from git, reusing the build cache. It skips
// the test where the history does not hold prevRelease (a tarball, a shallow clone).
func buildPrevWorker(t *testing.T) string {
	t.Helper()
	start := time.Now()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").CombinedOutput()
	switch {
	case errors.Is(err, exec.ErrNotFound) || strings.Contains(string(top), "not a git repository"):
		t.Skipf("no git history containing the previous release %s to build its worker from (not a git checkout)", prevRelease)
	case err != nil:
		t.Fatalf("git rev-parse: %v\n%s", err, top)
	}
	repo := strings.TrimSpace(string(top))
	if exec.Command("git", "-C", repo, "cat-file", "-e", prevRelease+"^{commit}").Run() != nil {
		t.Skipf("no git history containing the previous release %s to build its worker from (a shallow clone? git fetch --unshallow)", prevRelease)
	}
	dir := t.TempDir()
	tarball, src := filepath.Join(dir, "prev.tar"), filepath.Join(dir, "src")
	steps := []*exec.Cmd{
		exec.Command("git", "-C", repo, "archive", "-o", tarball, prevRelease),
		exec.Command("mkdir", src),
		exec.Command("tar", "-xf", tarball, "-C", src),
		exec.Command("go", "build", "-o", filepath.Join(dir, "worker-prev"), "./cmd/worker"),
	}
	steps[3].Dir = src
	for _, c := range steps {
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("build the previous release's worker: %v: %v\n%s", c.Args, err, out)
		}
	}
	t.Logf("built the worker of the previous release %.7s in %v", prevRelease, time.Since(start).Round(100*time.Millisecond))
	return filepath.Join(dir, "worker-prev")
}

// freshDatabase creates an empty database, dropped at the end of the test: the previous
// release's worker must create the schema itself, at its own version.
func freshDatabase(t *testing.T) string {
	t.Helper()
	base := os.Getenv("HERALD_TEST_DATABASE_URL")
	if base == "" {
		t.Fatal("HERALD_TEST_DATABASE_URL is not set: run the tests with `make test`, or point it at a server")
	}
	ctx := t.Context()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close(context.WithoutCancel(ctx)) }()
	name := testenv.Name("herald_upgrade")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(cctx, base); err == nil {
			_, _ = c.Exec(cctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			_ = c.Close(cctx)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// load writes the loaded rows with SQL, in the worker's queue, while the workers serve.
func load(t *testing.T, db *pgxpool.Pool, queue string) {
	t.Helper()
	ctx := t.Context()
	start := time.Now()
	for _, step := range []struct {
		sql  string
		args []any
	}{
		// Dispatches accepted over the last three days, to users of the example table.
		{`INSERT INTO herald.dispatches (id, event_id, refs, actor, status, attempt, queue, due_at, accepted_at, updated_at)
		SELECT gen_random_uuid(), 'accounts.password_reset',
			jsonb_build_array(jsonb_build_object('name', 'user', 'resource', 'users', 'id', (i % 1000 + 1)::text)),
			'upgrade-load', 'fanned_out', 1, $1, at, at, at
		FROM generate_series(1, $2::int) i, LATERAL (SELECT now() - interval '3 days' + i * interval '2 s' AS at) a`,
			[]any{queue, loadedDispatches + loadedOpen}},
		// Three final receipts for each of the first dispatches.
		{`INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, audience, recipient_id, recipient,
			status, attempt, due_at, expires_at, queue, subject, message_id, provider_response, sent_at, created_at, updated_at)
		SELECT rid, id, event_id, key, 'email', 'user', uid, jsonb_build_object('ID', uid, 'Address', 'user' || uid || '@example.com'),
			'sent', 1, accepted_at, accepted_at + interval '1 day', queue, 'Reset your password', '<' || rid || '@herald.test>',
			'250 2.0.0 OK', accepted_at + interval '1 s', accepted_at, accepted_at + interval '1 s'
		FROM (SELECT gen_random_uuid() AS rid, d.id, d.event_id, k.key, d.refs->0->>'id' AS uid, d.accepted_at, d.queue
			FROM (SELECT * FROM herald.dispatches WHERE actor = 'upgrade-load' ORDER BY accepted_at LIMIT $1) d
			CROSS JOIN (VALUES ('email'), ('reminder'), ('digest')) k(key)) r`,
			[]any{loadedDispatches}},
		// One open receipt, due tomorrow, for each of the others.
		{`INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, audience, recipient_id, recipient,
			status, due_at, expires_at, queue)
		SELECT gen_random_uuid(), id, event_id, 'reminder', 'email', 'user', refs->0->>'id',
			jsonb_build_object('ID', refs->0->>'id', 'Address', 'user' || (refs->0->>'id') || '@example.com'),
			'scheduled', now() + interval '1 day', now() + interval '2 days', queue
		FROM (SELECT * FROM herald.dispatches WHERE actor = 'upgrade-load' ORDER BY accepted_at OFFSET $1) d`,
			[]any{loadedDispatches}},
		{`ANALYZE herald.dispatches, herald.receipts`, nil},
	} {
		if _, err := db.Exec(ctx, step.sql, step.args...); err != nil {
			t.Fatalf("load: %v\n%s", err, step.sql)
		}
	}
	t.Logf("loaded %d dispatches, %d final and %d open receipts in %v", loadedDispatches+loadedOpen,
		3*loadedDispatches, loadedOpen, time.Since(start).Round(100*time.Millisecond))
}

// producer dispatches a password reset to user 1, 2, … every 25 ms, through Redis and the
// PostgreSQL outbox in turn, until stopped.
type producer struct {
	halt     chan struct{}
	haltOnce sync.Once
	done     chan struct{}
	mu       sync.Mutex
	ids      []string // the dispatch to user i+1
}

func startProducer(t *testing.T, client *herald.Client, db *pgxpool.Pool) *producer {
	t.Helper()
	p := &producer{halt: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { p.haltOnce.Do(func() { close(p.halt) }); <-p.done }) // before the pool closes
	go func() {
		defer close(p.done)
		tick := time.NewTicker(25 * time.Millisecond)
		defer tick.Stop()
		// Dispatches use the test's context, not the halt: one that is made is made whole.
		ctx := t.Context()
		for i := range users {
			select {
			case <-tick.C:
			case <-p.halt:
				return
			}
			refs := []events.Ref{{Name: "user", Resource: "users", ID: strconv.Itoa(i + 1)}}
			var id string
			var err error
			if i%2 == 0 {
				var r herald.DispatchResult
				r, err = client.Dispatch(ctx, "accounts.password_reset", refs, nil)
				id = r.ID
			} else {
				err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
					r, err := client.DispatchTx(ctx, tx, "accounts.password_reset", refs, nil)
					id = r.ID
					return err
				})
			}
			if err != nil {
				if ctx.Err() == nil {
					t.Errorf("dispatch to user %d: %v", i+1, err)
				}
				return
			}
			p.mu.Lock()
			p.ids = append(p.ids, id)
			p.mu.Unlock()
		}
		t.Errorf("the producer ran out of users (%d): the run took longer than it should", users)
	}()
	return p
}

// stop halts the producer and returns the dispatches it made.
func (p *producer) stop(t *testing.T) []string {
	t.Helper()
	p.haltOnce.Do(func() { close(p.halt) })
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ids)
}

// relfilenodes returns the storage file of each table the migrations touch: a rewrite changes it.
func relfilenodes(t *testing.T, db *pgxpool.Pool) map[string]uint32 {
	t.Helper()
	out := map[string]uint32{}
	for _, table := range []string{"herald.dispatches", "herald.receipts", "herald.rejected_tasks"} {
		var n uint32
		if err := db.QueryRow(t.Context(), "SELECT relfilenode::int8 FROM pg_class WHERE oid = $1::regclass", table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[table] = n
	}
	return out
}

func schemaVersion(t *testing.T, db *pgxpool.Pool) int {
	t.Helper()
	var v int
	if err := db.QueryRow(t.Context(), "SELECT version FROM herald.schema_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// sentBy returns how many deliveries worker p has recorded as sent, from its /metrics.
func sentBy(t *testing.T, p *proc) int {
	t.Helper()
	var addr string
	sc := bufio.NewScanner(strings.NewReader(p.logs.String()))
	for sc.Scan() && addr == "" {
		var line struct{ Message, HTTP string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Message == "herald worker started" {
			addr = line.HTTP
		}
	}
	if addr == "" {
		t.Fatalf("worker %d logged no HTTP address when it started\n%s", p.cmd.Process.Pid, p.logs.String())
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("worker %d metrics: %v", p.cmd.Process.Pid, err)
	}
	defer resp.Body.Close()
	n := 0
	sc = bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "herald_deliveries_total{") && strings.Contains(line, `outcome="sent"`) {
			f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("worker %d metrics: %q: %v", p.cmd.Process.Pid, line, err)
			}
			n += int(f)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFinal waits until every dispatch in ids and each of its receipts is final.
func waitFinal(t *testing.T, db *pgxpool.Pool, ids []string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var d, df, r, rf int
		err := db.QueryRow(t.Context(), `SELECT
				(SELECT count(*) FROM herald.dispatches WHERE id = ANY($1::uuid[])),
				(SELECT count(*) FROM herald.dispatches WHERE id = ANY($1::uuid[]) AND status = ANY($2)),
				(SELECT count(*) FROM herald.receipts WHERE dispatch_id = ANY($1::uuid[])),
				(SELECT count(*) FROM herald.receipts WHERE dispatch_id = ANY($1::uuid[]) AND status = ANY($3))`,
			ids, finalStates(ledger.KindDispatch), finalStates(ledger.KindReceipt)).Scan(&d, &df, &r, &rf)
		if err != nil {
			t.Fatal(err)
		}
		if d == len(ids) && df == d && rf == r && r >= d {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d/%d dispatches known to PostgreSQL, %d final; %d receipts, %d final\n%s", d, len(ids), df, r, rf, openRows(db))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkOneEmailEach: every dispatch fanned out, every receipt sent and not in doubt (nothing was
// killed), and the SMTP server received exactly one message with each receipt's Message-ID and
// none other.
func checkOneEmailEach(t *testing.T, db *pgxpool.Pool, ids []string, msgs []emailtest.Message) {
	t.Helper()
	received := map[string]int{}
	for _, m := range msgs {
		received[m.MessageID]++
	}
	rows, err := db.Query(t.Context(), `SELECT d.id::text, d.status, r.id::text, r.status, r.in_doubt, COALESCE(r.message_id, '')
		FROM herald.dispatches d LEFT JOIN herald.receipts r ON r.dispatch_id = d.id WHERE d.id = ANY($1::uuid[])`, ids)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var receiptCount int
	for rows.Next() {
		var dispatch, dStatus string
		var receipt, rStatus, messageID *string
		var inDoubt *bool
		if err := rows.Scan(&dispatch, &dStatus, &receipt, &rStatus, &inDoubt, &messageID); err != nil {
			t.Fatal(err)
		}
		if receipt == nil {
			t.Errorf("dispatch %s %s has no receipt", dispatch, dStatus)
			continue
		}
		receiptCount++
		want := "<" + *receipt + "@herald.test>"
		switch {
		case dStatus != string(ledger.DispatchFannedOut) || *rStatus != string(ledger.ReceiptSent):
			t.Errorf("dispatch %s %s, receipt %s %s: want fanned_out and sent", dispatch, dStatus, *receipt, *rStatus)
		case *inDoubt:
			t.Errorf("receipt %s is in doubt, but no worker was killed", *receipt)
		case *messageID != want:
			t.Errorf("receipt %s records Message-ID %q, want %q", *receipt, *messageID, want)
		case received[want] != 1:
			t.Errorf("receipt %s: %d emails with its Message-ID, want 1", *receipt, received[want])
		}
		delete(received, want)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if receiptCount < len(ids) {
		t.Errorf("%d receipts for %d dispatches", receiptCount, len(ids))
	}
	for id, n := range received {
		t.Errorf("%d emails with Message-ID %s, which no receipt of the run has", n, id)
	}
	t.Logf("%d dispatches, %d receipts, %d emails", len(ids), receiptCount, len(msgs))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}

// The application_name of each kind of session in the test's database, so that the lock watcher
// knows the migrating worker's sessions and a failure names who waited.
const (
	appPrev  = "herald-upgrade-prev"  // the previous release's workers
	appCur   = "herald-upgrade-cur"   // this release's worker: the migrating one
	appProbe = "herald-upgrade-probe" // the write probe
	appWatch = "herald-upgrade-watch" // the lock watcher
)

// blockBound is how long any session may wait for a lock the migrating worker holds or queues
// for. A migration that locks a table takes it briefly, under a lock_timeout below this bound
// (008: 2s), and a CONCURRENTLY build blocks no writer; one that stops the workers exceeds it.
const blockBound = 3 * time.Second

// progressWindow: a migration taking at least this long must leave the old worker sending; it
// sends tens of deliveries a second under the producer's load.
const progressWindow = 2 * time.Second

// withApp returns dbURL with application_name set to app.
func withApp(t *testing.T, dbURL, app string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", app)
	u.RawQuery = q.Encode()
	return u.String()
}

// lockWait is a session seen waiting, directly or through other waiting sessions, for a lock of
// the migrating worker.
type lockWait struct {
	pid                 int32
	app, query          string
	waited              time.Duration // since PostgreSQL's waitstart of its lock
	blocker             int32         // the migrating worker's session at the root of the wait
	blockerQuery        string
	firstSeen, lastSeen time.Time
}

func (w lockWait) String() string {
	who := w.app
	if who == "" {
		who = "the test's producer"
	}
	return fmt.Sprintf("session %d (%s) waited %v in %q behind the migrating worker's session %d in %q",
		w.pid, who, w.waited.Round(time.Millisecond), statement(w.query), w.blocker, statement(w.blockerQuery))
}

// statement shortens a query's text for a message: its words on one line, up to 100 bytes.
func statement(q string) string {
	q = strings.Join(strings.Fields(q), " ")
	if len(q) > 100 {
		q = q[:100] + "…"
	}
	return q
}

// lockWatcher polls pg_stat_activity every 20ms while this release's worker migrates and keeps,
// for each session waiting on the migrating worker, its longest wait.
type lockWatcher struct {
	halt     chan struct{}
	haltOnce sync.Once
	done     chan struct{}
	polls    int
	seenCur  bool                // a session of the migrating worker was seen
	waits    map[int32]*lockWait // by waiting pid: its longest wait
	err      error
}

func watchLocks(t *testing.T, dbURL string) *lockWatcher {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, withApp(t, dbURL, appWatch))
	if err != nil {
		t.Fatal(err)
	}
	w := &lockWatcher{halt: make(chan struct{}), done: make(chan struct{}), waits: map[int32]*lockWait{}}
	t.Cleanup(func() {
		w.haltOnce.Do(func() { close(w.halt) })
		<-w.done
		_ = conn.Close(context.WithoutCancel(ctx))
	})
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if err := w.poll(ctx, conn); err != nil {
				w.err = err
				return
			}
			select {
			case <-w.halt:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// poll records the sessions of the test's database that wait for a lock held, or queued for,
// by the migrating worker, directly or behind other waiting sessions (pg_blocking_pids names
// both the holders and the sessions ahead in the lock's queue).
func (w *lockWatcher) poll(ctx context.Context, conn *pgx.Conn) error {
	type session struct {
		app, query string
		waiting    bool
		blockers   []int32
		waited     float64 // seconds
	}
	rows, err := conn.Query(ctx, `SELECT a.pid, a.application_name, left(a.query, 300), a.wait_event_type IS NOT DISTINCT FROM 'Lock',
			CASE WHEN a.wait_event_type = 'Lock' THEN pg_blocking_pids(a.pid) END,
			COALESCE((SELECT EXTRACT(epoch FROM clock_timestamp() - min(l.waitstart))::float8
				FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted), 0)
		FROM pg_stat_activity a
		WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
			AND (a.wait_event_type = 'Lock' OR a.application_name = $1)`, appCur)
	if err != nil {
		return err
	}
	sessions := map[int32]session{}
	var pid int32
	var s session
	_, err = pgx.ForEachRow(rows, []any{&pid, &s.app, &s.query, &s.waiting, &s.blockers, &s.waited}, func() error {
		sessions[pid] = s
		return nil
	})
	if err != nil {
		return err
	}
	now := time.Now()
	w.polls++
	for pid, s := range sessions {
		if s.app == appCur {
			w.seenCur = true
			continue
		}
		if !s.waiting {
			continue
		}
		// Follow the waits from pid to a session of the migrating worker.
		var root int32
		seen := map[int32]bool{pid: true}
		for queue := slices.Clone(s.blockers); len(queue) > 0 && root == 0; queue = queue[1:] {
			b := queue[0]
			if seen[b] {
				continue
			}
			seen[b] = true
			switch bs, ok := sessions[b]; {
			case ok && bs.app == appCur:
				root = b
			case ok && bs.waiting:
				queue = append(queue, bs.blockers...)
			}
		}
		if root == 0 {
			continue
		}
		waited := time.Duration(s.waited * float64(time.Second))
		lw := w.waits[pid]
		if lw == nil {
			lw = &lockWait{pid: pid, app: s.app, firstSeen: now}
			w.waits[pid] = lw
		}
		// A wait PostgreSQL has not stamped yet counts from when the watcher first saw it.
		waited = max(waited, now.Sub(lw.firstSeen))
		lw.lastSeen = now
		if waited >= lw.waited {
			lw.waited, lw.query, lw.blocker, lw.blockerQuery = waited, s.query, root, sessions[root].query
		}
	}
	return nil
}

// stop ends the watch once this release's worker serves, which it does only after migrating:
// the schema must be at this release's last migration. It fails the test for each session that
// waited on the migrating worker for blockBound or longer.
func (w *lockWatcher) stop(t *testing.T, db *pgxpool.Pool, latest int) {
	t.Helper()
	if v := schemaVersion(t, db); v != latest {
		t.Errorf("this release's worker serves at schema_version %d, want %d: the lock watch would stop before the migrations end", v, latest)
	}
	w.haltOnce.Do(func() { close(w.halt) })
	<-w.done
	if w.err != nil {
		t.Fatalf("the lock watcher: %v", w.err)
	}
	waits := slices.SortedFunc(maps.Values(w.waits), func(a, b *lockWait) int { return cmp.Compare(b.waited, a.waited) })
	var over []string
	for _, lw := range waits {
		if lw.waited >= blockBound {
			over = append(over, lw.String())
		}
	}
	if len(over) > 0 {
		t.Errorf("the migration stopped %d other session(s) for %v or longer (a migration must take its locks under a lock_timeout, "+
			"or CONCURRENTLY), the longest:\n\t%s", len(over), blockBound, strings.Join(over[:min(len(over), 4)], "\n\t"))
	}
	switch {
	case !w.seenCur:
		t.Logf("lock watcher: %d polls, no session of the migrating worker seen (the migrations took under a poll)", w.polls)
	case len(waits) == 0:
		t.Logf("lock watcher: %d polls, no session waited on the migrating worker", w.polls)
	default:
		t.Logf("lock watcher: %d polls, %d session(s) waited on the migrating worker, the longest: %v", w.polls, len(waits), waits[0])
	}
}

// writeProbe writes to the tables the migrations alter every 20ms, in a queue no worker serves:
// it inserts a rejected task and updates a dispatch and a receipt of its own. Whatever a
// migration locks, the probe is there to wait for it.
type writeProbe struct {
	halt     chan struct{}
	haltOnce sync.Once
	done     chan struct{}
	writes   int
	slowest  time.Duration
	slowWhat string
	err      error
}

func startProbe(t *testing.T, dbURL string) *writeProbe {
	t.Helper()
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, withApp(t, dbURL, appProbe))
	if err != nil {
		t.Fatal(err)
	}
	var dispatch, receipt string
	err = conn.QueryRow(ctx, `WITH d AS (
			INSERT INTO herald.dispatches (id, event_id, actor, queue, due_at)
			VALUES (gen_random_uuid(), 'upgrade.probe', 'upgrade-probe', 'upgrade-probe', now() + interval '10 years')
			RETURNING id, event_id, queue, due_at)
		INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, recipient_id, due_at, expires_at, queue)
		SELECT gen_random_uuid(), id, event_id, 'email', 'email', 'probe', due_at, due_at + interval '1 day', queue FROM d
		RETURNING dispatch_id::text, id::text`).Scan(&dispatch, &receipt)
	if err != nil {
		_ = conn.Close(ctx)
		t.Fatalf("the write probe's rows: %v", err)
	}
	p := &writeProbe{halt: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() {
		p.haltOnce.Do(func() { close(p.halt) })
		<-p.done
		_ = conn.Close(context.WithoutCancel(ctx))
	})
	writes := []struct {
		what, sql string
		arg       any
	}{
		{"INSERT INTO herald.rejected_tasks", `INSERT INTO herald.rejected_tasks (task_type, queue, reason) VALUES ('upgrade:probe', 'upgrade-probe', $1)`, "probe"},
		{"UPDATE herald.dispatches", `UPDATE herald.dispatches SET updated_at = now() WHERE id = $1`, dispatch},
		{"UPDATE herald.receipts", `UPDATE herald.receipts SET updated_at = now() WHERE id = $1`, receipt},
	}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, w := range writes {
				start := time.Now()
				if _, err := conn.Exec(ctx, w.sql, w.arg); err != nil {
					if ctx.Err() == nil {
						p.err = fmt.Errorf("%s: %w", w.what, err)
					}
					return
				}
				p.writes++
				if d := time.Since(start); d > p.slowest {
					p.slowest, p.slowWhat = d, w.what
				}
			}
			select {
			case <-p.halt:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// stop ends the probe and fails the test if a write failed or waited blockBound or longer.
func (p *writeProbe) stop(t *testing.T) {
	t.Helper()
	p.haltOnce.Do(func() { close(p.halt) })
	<-p.done
	if p.err != nil {
		t.Errorf("the write probe: %v", p.err)
	}
	if p.slowest >= blockBound {
		t.Errorf("a write during the migrations took %v (%s): the migration stopped writers (bound %v)",
			p.slowest.Round(time.Millisecond), p.slowWhat, blockBound)
	}
	t.Logf("write probe: %d writes during the migrations, the slowest %v (%s)", p.writes, p.slowest.Round(time.Millisecond), p.slowWhat)
}
