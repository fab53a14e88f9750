package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// slowRelay is an SMTP front for an emailtest server: it reads each message, waits a random
// delay below max before handing it on (the reply to the final "." waits with it), and counts
// the messages it holds. A worker killed while its relay holds one died mid-send, after the
// relay had the whole message: the relay still hands it on, as a real one would.
type slowRelay struct {
	rec  *emailtest.Server
	max  time.Duration
	addr string
	held atomic.Int64 // messages in DATA, waiting for their reply
}

func startSlowRelay(t *testing.T, rec *emailtest.Server, maxDelay time.Duration) *slowRelay {
	t.Helper()
	r := &slowRelay{rec: rec, max: maxDelay}
	srv := smtp.NewServer(r)
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 30*time.Second, 30*time.Second
	srv.MaxRecipients = 10
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		_ = srv.Close()
		_ = ln.Close()
		<-served
	})
	return r
}

// URL is the HERALD_SMTP_URL of the relay.
func (r *slowRelay) URL() string { return "smtp://" + r.addr + "?tls=none" }

// NewSession implements smtp.Backend.
func (r *slowRelay) NewSession(c *smtp.Conn) (smtp.Session, error) {
	s, err := r.rec.NewSession(c)
	return &slowSession{Session: s, r: r}, err
}

type slowSession struct {
	smtp.Session
	r *slowRelay
}

func (s *slowSession) Data(in io.Reader) error {
	raw, err := io.ReadAll(in)
	if err != nil {
		return err
	}
	s.r.held.Add(1)
	defer s.r.held.Add(-1)
	time.Sleep(rand.N(s.r.max)) // a slow relay, not a wait for something
	return s.Session.Data(bytes.NewReader(raw))
}

// TestKilledWorkersLoseNothing runs 300 password-reset dispatches (half through Redis, half
// through the PostgreSQL outbox) to two worker processes and kills a worker with SIGKILL four
// times, at random points (two of them while it waits for the reply to a message it sent),
// restarting it each time. Then every dispatch reaches a final state, every delivery is sent
// and received at least once, and a delivery received twice is one the engine flagged in_doubt,
// both copies carrying its Message-ID.
func TestKilledWorkersLoseNothing(t *testing.T) {
	t.Parallel()
	const (
		n     = 300
		kills = 4
	)
	rec := emailtest.Start(t)
	relays := [2]*slowRelay{startSlowRelay(t, rec, 150*time.Millisecond), startSlowRelay(t, rec, 150*time.Millisecond)}
	dbURL, queue, keys := testenv.DatabaseURL(t), testenv.Queue(t), "dev1:"+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	base := append(os.Environ(),
		"HERALD_REDIS_URL="+testenv.RedisURL(t),
		"HERALD_DATABASE_URL="+dbURL,
		"HERALD_QUEUE="+queue,
		"HERALD_MAIL_FROM=Herald <noreply@herald.test>",
		"HERALD_SECRET_KEYS="+keys,
		"HERALD_HTTP_ADDR=off",
		"HERALD_LOG_FORMAT=json",
		"HERALD_MIGRATE=off",
		"HERALD_EXAMPLE_RESET_KEY="+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
		// Short timings: a killed worker's deliveries are reclaimed seconds later.
		"HERALD_CONCURRENCY=4",
		"HERALD_SEND_TIMEOUT=2s", "HERALD_TASK_TIMEOUT=7s", "HERALD_LEASE=8s", "HERALD_SHUTDOWN_TIMEOUT=7s",
		"HERALD_PROMOTER_INTERVAL=200ms", "HERALD_BACKOFF_MIN=200ms", "HERALD_BACKOFF_MAX=1s",
	)
	envOf := func(slot int) []string { return append(slices.Clone(base), "HERALD_SMTP_URL="+relays[slot].URL()) }
	migrate := exec.Command(filepath.Join(binaries(t), "worker"), "migrate")
	migrate.Env, migrate.Dir = base, t.TempDir()
	if out, err := migrate.CombinedOutput(); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	db, err := pgxpool.New(t.Context(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if _, err := db.Exec(t.Context(), `INSERT INTO herald_example.users (id, email, name)
		SELECT i::text, 'user' || i || '@example.com', 'User ' || i FROM generate_series(1, $1) i`, n); err != nil {
		t.Fatal(err)
	}
	client, err := herald.NewClient(herald.Config{Redis: testenv.RedisOpt(t), SecretKeys: keys, Queue: queue, TaskTimeout: 7 * time.Second, SendTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })

	redisOpt := testenv.RedisOpt(t)
	var all []*proc // every worker started, for the evidence on failure
	var workers [2]*proc
	for slot := range workers {
		workers[slot] = startWorker(t, envOf(slot))
		all = append(all, workers[slot])
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, all)
		}
	})

	// The producer: one dispatch to user i every 40 ms, through Redis or the outbox.
	ids := make([]string, n)  // dispatch id of user i+1
	var progress atomic.Int64 // dispatches made so far
	produced := make(chan struct{})
	ctx, stop := context.WithCancel(t.Context())
	t.Cleanup(func() { stop(); <-produced }) // before the pool closes
	go func() {
		defer close(produced)
		tick := time.NewTicker(40 * time.Millisecond)
		defer tick.Stop()
		for i := range n {
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
			refs := []events.Ref{{Name: "user", Resource: "users", ID: strconv.Itoa(i + 1)}}
			var err error
			if i%2 == 0 {
				var r herald.DispatchResult
				r, err = client.Dispatch(ctx, "accounts.password_reset", refs, nil)
				ids[i] = r.ID
			} else {
				err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
					r, err := client.DispatchTx(ctx, tx, "accounts.password_reset", refs, nil)
					ids[i] = r.ID
					return err
				})
			}
			if err != nil && ctx.Err() == nil {
				t.Errorf("dispatch %d: %v", i+1, err)
				return
			}
			progress.Add(1)
		}
	}()

	// The killer, meanwhile: kill k comes at a random point of the k-th of kills+1 stretches of
	// the run (by dispatches made, so a slow restart does not push the kills past the end), then
	// the victim restarts; the two slots take turns.
	stretch := n / (kills + 1)
	for k := range kills {
		at := int64(k*stretch + stretch/2 + rand.IntN(stretch))
		for progress.Load() < at && !t.Failed() {
			time.Sleep(5 * time.Millisecond)
		}
		if t.Failed() {
			return // the producer failed
		}
		slot := k % 2
		if k%2 == 0 { // this one lands mid-send: the victim's relay holds a message
			deadline := time.Now().Add(10 * time.Second)
			for relays[slot].held.Load() == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("kill %d: worker %d had no send in flight for 10s", k+1, slot)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}
		victim := workers[slot]
		_ = victim.cmd.Process.Kill()
		_ = victim.wait(t, 10*time.Second)
		pid := victim.cmd.Process.Pid
		t.Cleanup(func() { testenv.ForgetAsynqServer(redisOpt, pid) }) // a killed server cannot unregister
		t.Logf("kill %d: worker %d (pid %d), %d messages received so far", k+1, slot, pid, len(rec.Messages()))
		workers[slot] = startWorker(t, envOf(slot))
		all = append(all, workers[slot])
	}
	<-produced
	if t.Failed() {
		return
	}

	// Every dispatch and receipt reaches a final state. A dispatch task killed before its first
	// write to PostgreSQL (Redis path) or before its claim (outbox path: the promoter's task id is
	// taken by the orphan) waits for asynq's recoverer: its lease of 30 s, then a pass each minute.
	start := time.Now()
	finalDispatch, finalReceipt := finalStates(ledger.KindDispatch), finalStates(ledger.KindReceipt)
	deadline := start.Add(4 * time.Minute)
	for {
		var d, df, r, rf int
		err := db.QueryRow(t.Context(), `SELECT
				(SELECT count(*) FROM herald.dispatches), (SELECT count(*) FROM herald.dispatches WHERE status = ANY($1)),
				(SELECT count(*) FROM herald.receipts), (SELECT count(*) FROM herald.receipts WHERE status = ANY($2))`,
			finalDispatch, finalReceipt).Scan(&d, &df, &r, &rf)
		if err != nil {
			t.Fatal(err)
		}
		if d == n && df == n && rf == r && r >= n && relays[0].held.Load()+relays[1].held.Load() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d/%d dispatches known to PostgreSQL, %d final; %d receipts, %d final\n%s",
				time.Since(start), d, n, df, r, rf, openRows(db))
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("all final %v after the last dispatch", time.Since(start).Round(100*time.Millisecond))
	check(t, db, ids, rec.Messages())
}

func finalStates(k ledger.Kind) []string {
	var out []string
	for _, s := range ledger.States(k) {
		if ledger.Final(k, s) {
			out = append(out, string(s))
		}
	}
	return out
}

// check compares the receipts with the mail received. The relay's recipient (user i's own
// address) tells the deliveries apart independently of the Message-ID under test.
func check(t *testing.T, db *pgxpool.Pool, ids []string, msgs []emailtest.Message) {
	t.Helper()
	byAddr := map[string][]emailtest.Message{}
	for _, m := range msgs {
		if len(m.To) != 1 {
			t.Errorf("a message to %v: want one recipient", m.To)
			continue
		}
		byAddr[m.To[0]] = append(byAddr[m.To[0]], m)
	}
	type row struct {
		dispatchStatus, id, status, messageID string
		attempt                               int
		inDoubt                               bool
		lastError                             *string
	}
	var inDoubt, twice, maxAttempt int
	for i, id := range ids {
		addr := fmt.Sprintf("user%d@example.com", i+1)
		var rs []row
		rows, err := db.Query(t.Context(), `SELECT d.status, r.id::text, r.status, COALESCE(r.message_id, ''), r.attempt, r.in_doubt, r.last_error
			FROM herald.dispatches d JOIN herald.receipts r ON r.dispatch_id = d.id WHERE d.id = $1`, id)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.dispatchStatus, &r.id, &r.status, &r.messageID, &r.attempt, &r.inDoubt, &r.lastError); err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		got := byAddr[addr]
		delete(byAddr, addr)
		if len(rs) != 1 {
			t.Errorf("dispatch %s (user %d): %d receipts, want 1; %d emails", id, i+1, len(rs), len(got))
			continue
		}
		r := rs[0]
		maxAttempt = max(maxAttempt, r.attempt)
		if r.inDoubt {
			inDoubt++
		}
		if r.dispatchStatus != string(ledger.DispatchFannedOut) || r.status != string(ledger.ReceiptSent) {
			t.Errorf("dispatch %s (user %d) %s, receipt %s %s attempt %d in_doubt=%v last_error=%v; %d emails",
				id, i+1, r.dispatchStatus, r.id, r.status, r.attempt, r.inDoubt, deref(r.lastError), len(got))
			continue
		}
		want := "<" + r.id + "@herald.test>"
		if r.messageID != want {
			t.Errorf("receipt %s records Message-ID %q, want %q", r.id, r.messageID, want)
		}
		switch {
		case len(got) == 0:
			t.Errorf("LOST: receipt %s (user %d) is sent, attempt %d, in_doubt=%v, but no email arrived", r.id, i+1, r.attempt, r.inDoubt)
		case len(got) > 1 && !r.inDoubt:
			t.Errorf("UNFLAGGED DUPLICATE: receipt %s (user %d) attempt %d: %d emails, in_doubt=false", r.id, i+1, r.attempt, len(got))
		}
		if len(got) > 1 {
			twice++
		}
		for _, m := range got {
			if m.MessageID != want {
				t.Errorf("receipt %s (user %d): an email carries Message-ID %q, want %q (%d emails)", r.id, i+1, m.MessageID, want, len(got))
			}
		}
	}
	for addr, ms := range byAddr {
		t.Errorf("%d emails to %s, which no dispatch addressed", len(ms), addr)
	}
	t.Logf("%d dispatches, %d emails: %d deliveries in doubt, %d of them received twice; highest attempt %d",
		len(ids), len(msgs), inDoubt, twice, maxAttempt)
	if inDoubt == 0 {
		t.Error("no delivery was reclaimed in doubt: the kills mid-send did not exercise the counted window")
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// openRows lists the rows that are not final yet, for the failure message.
func openRows(db *pgxpool.Pool) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	rows, err := db.Query(ctx, `SELECT 'dispatch', id::text, status, attempt, false, COALESCE(last_error, '') FROM herald.dispatches WHERE NOT status = ANY($1)
		UNION ALL SELECT 'receipt', id::text, status, attempt, in_doubt, COALESCE(last_error, '') FROM herald.receipts WHERE NOT status = ANY($2) LIMIT 50`,
		finalStates(ledger.KindDispatch), finalStates(ledger.KindReceipt))
	if err != nil {
		return err.Error()
	}
	defer rows.Close()
	for rows.Next() {
		var kind, id, status, lastErr string
		var attempt int
		var doubt bool
		_ = rows.Scan(&kind, &id, &status, &attempt, &doubt, &lastErr)
		fmt.Fprintf(&b, "%s %s %s attempt=%d in_doubt=%v %s\n", kind, id, status, attempt, doubt, lastErr)
	}
	return b.String()
}

// dumpLogs writes every worker's logs to a file kept after the test, and names it.
func dumpLogs(t *testing.T, ps []*proc) {
	f, err := os.CreateTemp("", "herald-kill-run-*.log")
	if err != nil {
		return
	}
	defer f.Close()
	for i, p := range ps {
		fmt.Fprintf(f, "=== worker %d (pid %d)\n%s\n", i, p.cmd.Process.Pid, p.logs.String())
	}
	t.Logf("worker logs: %s", f.Name())
}
