package ledger_test

import (
	"context"
	"errors"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestMigrationBehindALongReaderGivesUp: a migration that needs a strong lock on a table a long
// transaction has read (an operator's psql session, a report) gives up after its lock_timeout
// instead of waiting behind it with every worker's write queued behind the migration. The
// migration fails with a lock timeout (the worker's next start retries it), the writers carry
// on, and the migration applies once the reader is gone.
func TestMigrationBehindALongReaderGivesUp(t *testing.T) {
	ctx := t.Context()
	pool := databaseAt(ctx, t, 7) // the schema of the release before 008

	reader, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = reader.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := reader.Exec(ctx, "SELECT count(*) FROM herald.rejected_tasks"); err != nil {
		t.Fatal(err)
	}

	migrated := make(chan error, 1)
	go func() {
		mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		migrated <- ledger.Migrate(mctx, pool)
	}()
	// Wait until the migration waits for its lock, then write as a worker does.
	var migErr error
	ended := false
	testenv.WaitFor(t, 20*time.Second, "the migration to wait for its lock", func() bool {
		select {
		case migErr = <-migrated:
			ended = true
			return true
		default:
		}
		var n int
		_ = pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks
			WHERE NOT granted AND relation = 'herald.rejected_tasks'::regclass
			  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n)
		return n > 0
	})
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := pool.Exec(wctx, `INSERT INTO herald.rejected_tasks (task_type, task_id, queue, reason, payload_size, payload_sha256)
		VALUES ('herald:dispatch', 'x', 'q', 'r', 0, '')`); err != nil {
		t.Fatalf("a worker's write behind the waiting migration: %v", err)
	}
	if !ended {
		migErr = <-migrated
	}
	var pgErr *pgconn.PgError
	if !errors.As(migErr, &pgErr) || pgErr.Code != "55P03" {
		t.Fatalf("migration behind a long reader = %v, want a lock timeout (55P03)", migErr)
	}
	if err := reader.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ledger.Migrate(ctx, pool); err != nil {
		t.Fatalf("migration once the reader is gone: %v", err)
	}
}

// Migrations from this number on run while workers of the previous release serve (rolling
// deploys); earlier ones were written before that promise and are left as released.
const firstOnlineMigration = 6

var (
	reAlterTable   = regexp.MustCompile(`(?i)\bALTER\s+TABLE\b`)
	reLockTimeout  = regexp.MustCompile(`(?i)\bSET\s+(LOCAL\s+)?lock_timeout\s*(?:=|TO)\s*'?([^';\s]*)`)
	reIndexDDL     = regexp.MustCompile(`(?i)\b(CREATE\s+(UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX)\b(\s+CONCURRENTLY)?`)
	reCreateTable  = regexp.MustCompile(`(?i)\bCREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?([\w."]+)`)
	reIndexOnTable = regexp.MustCompile(`(?i)\bON\s+([\w."]+)`)
	reForbidden    = regexp.MustCompile(`(?i)\b(LOCK\s+TABLE|VACUUM\s+FULL|CLUSTER|ALTER\s+COLUMN\s+\S+\s+(SET\s+DATA\s+)?TYPE|SET\s+NOT\s+NULL|RENAME|DROP\s+COLUMN)\b`)
	reConstraint   = regexp.MustCompile(`(?i)\bADD\s+CONSTRAINT\b[^;]*;`)
	reComment      = regexp.MustCompile(`--[^\n]*`)
)

// TestMigrationsAreSafeOnline reads every migration from firstOnlineMigration on and refuses
// what would stop the workers of a rolling deploy: a strong lock taken without a lock_timeout,
// an index built or dropped without CONCURRENTLY (outside a transaction: tern's disable-tx
// marker) on a table that already exists, a constraint validated while adding it, and the
// statements that rewrite or lock a whole table. TestRollingUpgrade (cmd/worker) runs them under
// a live worker; this catches the mistake before anyone runs anything.
func TestMigrationsAreSafeOnline(t *testing.T) {
	entries, err := fs.ReadDir(ledger.Migrations(), ".")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, e := range entries {
		n, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
		if err != nil || n < firstOnlineMigration {
			continue
		}
		raw, err := fs.ReadFile(ledger.Migrations(), e.Name())
		if err != nil {
			t.Fatal(err)
		}
		checked++
		disableTx := strings.HasPrefix(string(raw), "---- tern: disable-tx ----")
		sql := reComment.ReplaceAllString(string(raw), "")
		if loc := reAlterTable.FindStringIndex(sql); loc != nil {
			if lt := reLockTimeout.FindStringIndex(sql); lt == nil || lt[0] > loc[0] {
				t.Errorf("%s: ALTER TABLE without a lock_timeout set before it", e.Name())
			}
		}
		for _, m := range reLockTimeout.FindAllStringSubmatch(sql, -1) {
			switch {
			case m[1] != "" && disableTx:
				t.Errorf("%s: SET LOCAL lock_timeout has no effect outside a transaction (disable-tx): use SET", e.Name())
			case strings.Trim(m[2], "0") == "" || strings.EqualFold(m[2], "DEFAULT"):
				t.Errorf("%s: lock_timeout %q waits forever", e.Name(), m[2])
			}
		}
		if m := reForbidden.FindString(sql); m != "" {
			t.Errorf("%s: %q rewrites or locks a whole table while workers run", e.Name(), m)
		}
		for _, c := range reConstraint.FindAllString(sql, -1) {
			if !regexp.MustCompile(`(?i)\bNOT\s+VALID\b`).MatchString(c) && !regexp.MustCompile(`(?i)\bUSING\s+INDEX\b`).MatchString(c) {
				t.Errorf("%s: %q validates every row under the lock: add it NOT VALID and VALIDATE it in a later migration", e.Name(), c)
			}
		}
		created := map[string]bool{}
		for _, m := range reCreateTable.FindAllStringSubmatch(sql, -1) {
			created[strings.ToLower(m[2])] = true
		}
		for _, stmt := range strings.Split(sql, ";") {
			m := reIndexDDL.FindStringSubmatch(stmt)
			if m == nil {
				continue
			}
			if on := reIndexOnTable.FindStringSubmatch(stmt); on != nil && created[strings.ToLower(on[1])] {
				continue // an index of a table this migration creates: empty, nobody waits for it
			}
			if m[3] == "" {
				t.Errorf("%s: %q without CONCURRENTLY blocks the table's writers while it builds", e.Name(), strings.TrimSpace(m[0]))
			} else if !disableTx {
				t.Errorf("%s: CONCURRENTLY needs the file to start with ---- tern: disable-tx ----", e.Name())
			}
		}
	}
	if checked < 4 {
		t.Fatalf("checked %d migrations: the migrations moved?", checked)
	}
}
