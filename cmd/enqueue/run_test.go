package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/seal"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const keys = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

type bundle struct {
	env map[string]string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	dbURL := testenv.DatabaseURL(t)
	return &bundle{env: map[string]string{
		"HERALD_REDIS_URL": testenv.RedisURL(t), "HERALD_DATABASE_URL": dbURL, "HERALD_SECRET_KEYS": keys,
		"HERALD_QUEUE": testenv.Queue(t),
	}}
}

func (b *bundle) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"--env-file", ""}, args...)
	err := run(context.Background(), args, func(k string) string { return b.env[k] }, &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestHelpOnEveryCommand(t *testing.T) {
	t.Parallel()
	b := &bundle{env: map[string]string{}}
	for _, args := range [][]string{{"--help"}, {"dispatch", "--help"}, {"status", "--help"}, {"receipts", "show", "--help"},
		{"mailbox", "list", "--help"}, {"mailbox", "show", "--help"}, {"cancel", "--help"}, {"receipts", "cancel", "--help"},
		{"rejected", "--help"}, {"dispatches", "--help"}, {"receipts", "list", "--help"}, {"help"}, {"help", "dispatch"},
		{"erase", "--help"}} {
		out, err := b.run(t, args...)
		if err != nil || !strings.Contains(out, "Usage: enqueue") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"dispatch", "accounts.password_reset", "--bogus"}, want: "unknown flag --bogus"},
		{args: []string{"dispatch", "accounts.password_reset", "--ref", "user:42"}, want: "--ref"},
		{args: []string{"dispatch", "accounts.password_reset", "--var", "novalue"}, want: "want key=value"},
		{args: []string{"dispatch", "accounts.password_reset", "--var", "n:={bad"}, want: "not JSON"},
		{args: []string{"dispatch", "Not An Event"}, want: "invalid dispatch"},
		{args: []string{"dispatch", "accounts.password_reset"}, env: map[string]string{"HERALD_REDIS_URL": "redis://127.0.0.1:1/0"}, want: "does not answer"},
		{args: []string{"dispatch", "accounts.password_reset"}, env: map[string]string{"HERALD_SECRET_KEYS": ""}, want: "HERALD_SECRET_KEYS is not set"},
		{args: []string{"status", "01a2203a-c569-7ae3-b0c8-f27792223ad5"}, want: "not found"},
		{args: []string{"receipts", "show", "01a2203a-c569-7ae3-b0c8-f27792223ad5"}, want: "not found"},
		{args: []string{"mailbox", "show", "99"}, want: "not found"},
		{args: []string{"erase"}, want: "--recipient"},
		{args: []string{"erase", "--recipient", " "}, want: "--recipient is empty"},
		{args: []string{"erase", "--recipient", "a@b"}, env: map[string]string{"HERALD_REDIS_URL": ""}, want: "HERALD_REDIS_URL is not set"},
	} {
		saved := map[string]string{}
		for k, v := range tc.env {
			saved[k] = b.env[k]
			b.env[k] = v
		}
		out, err := b.run(t, tc.args...)
		for k, v := range saved {
			b.env[k] = v
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v (out %q), want %q", tc.args, err, out, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error is not one line: %q", tc.args, err)
		}
	}
}

func TestDispatchQueuedAndOutbox(t *testing.T) {
	t.Parallel()
	b := setup(t)
	out, err := b.run(t, "dispatch", "accounts.password_reset", "--ref", "user=users/42", "--var", "n:=1.50", "--secret", "reset_token=abc=def")
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out)
	// No worker runs: the dispatch is in Redis only.
	out, err = b.run(t, "status", id)
	if err != nil || !strings.Contains(out, "queued, not yet picked up") {
		t.Fatalf("status: %v %q", err, out)
	}
	// The outbox path: recorded in Postgres at once, idempotent.
	first, err := b.run(t, "--json", "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/42", "--idempotency-key", "k1")
	if err != nil {
		t.Fatal(err)
	}
	var r1, r2 struct {
		ID        string
		Duplicate bool
	}
	_ = json.Unmarshal([]byte(first), &r1)
	second, err := b.run(t, "--json", "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/42", "--idempotency-key", "k1")
	if err != nil {
		t.Fatal(err)
	}
	_ = json.Unmarshal([]byte(second), &r2)
	if r1.ID == "" || r2.ID != r1.ID || !r2.Duplicate {
		t.Fatalf("idempotent --tx: %+v %+v", r1, r2)
	}
	if _, err := b.run(t, "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/43", "--idempotency-key", "k1"); err == nil ||
		!strings.Contains(err.Error(), "idempotency key already used") {
		t.Fatalf("conflict: %v", err)
	}
	out, err = b.run(t, "status", r1.ID)
	if err != nil || !strings.Contains(out, "accepted") || !strings.Contains(out, "receipts  none") {
		t.Fatalf("status of an outbox dispatch: %v %q", err, out)
	}
	out, err = b.run(t, "mailbox", "list")
	if err != nil || !strings.Contains(out, "empty") {
		t.Fatalf("mailbox: %v %q", err, out)
	}
	_ = examples.User{}
}

func TestCancelAndRejected(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, b.env["HERALD_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := ledger.New(pool)
	out, err := b.run(t, "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/42")
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out)
	now := time.Now()
	for _, key := range []string{"later", "sooner"} {
		if err := store.InsertReceipts(ctx, []ledger.NewReceipt{{ID: uuid.Must(uuid.NewV7()).String(), DispatchID: id, EventID: "accounts.password_reset",
			ChannelKey: key, Transport: "email", RecipientID: "42", MaxAttempts: 3, DueAt: now.Add(time.Hour), ExpiresAt: now.Add(2 * time.Hour)}}); err != nil {
			t.Fatal(err)
		}
	}
	rs, _ := store.ListReceipts(ctx, id)
	out, err = b.run(t, "receipts", "cancel", rs[0].ID, "--reason", "changed my mind")
	if err != nil || !strings.Contains(out, "canceled") {
		t.Fatalf("receipts cancel: %v %q", err, out)
	}
	if _, err := b.run(t, "receipts", "cancel", rs[0].ID); err == nil || !strings.Contains(err.Error(), "is canceled") {
		t.Fatalf("cancel twice: %v", err)
	}
	out, err = b.run(t, "cancel", id)
	if err != nil || !strings.Contains(out, "canceled while accepted") || !strings.Contains(out, "1 delivery canceled") {
		t.Fatalf("cancel dispatch: %v %q", err, out)
	}
	if st, _ := store.Status(ctx, ledger.KindDispatch, id); st != ledger.DispatchCanceled {
		t.Fatalf("dispatch %s after cancel, want canceled", st)
	}
	// A dispatch still queued in Redis: a tombstone its first sight respects.
	out, err = b.run(t, "dispatch", "accounts.password_reset", "--ref", "user=users/42")
	if err != nil {
		t.Fatal(err)
	}
	queued := strings.TrimSpace(out)
	out, err = b.run(t, "cancel", queued)
	if err != nil || !strings.Contains(out, "before any worker saw it") {
		t.Fatalf("cancel a queued dispatch: %v %q", err, out)
	}
	if st, _ := store.Status(ctx, ledger.KindDispatch, queued); st != ledger.DispatchCanceled {
		t.Fatalf("tombstone status %q", st)
	}
	// An id known to neither store is an error, not a tombstone.
	if _, err := b.run(t, "cancel", uuid.Must(uuid.NewV7()).String()); err == nil || !strings.Contains(err.Error(), "nothing to cancel") {
		t.Fatalf("cancel an unknown id: %v", err)
	}
	out, _ = b.run(t, "status", id)
	if strings.Count(out, "canceled  attempt") != 2 || !strings.Contains(out, "changed my mind") {
		t.Fatalf("status after cancel: %q", out)
	}
	if err := store.RecordRejectedTask(ctx, "herald:dispatch", "dispatch:x:0", "q", "malformed payload: unexpected EOF", []byte("{")); err != nil {
		t.Fatal(err)
	}
	out, err = b.run(t, "rejected")
	if err != nil || !strings.Contains(out, "malformed payload: unexpected EOF") {
		t.Fatalf("rejected: %v %q", err, out)
	}
}

// TestCommaValuesAreNotSplit: a value holding a comma is one value; a flag is repeated instead.
func TestCommaValuesAreNotSplit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	out, err := b.run(t, "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/42",
		"--var", "note=hello, world", "--var", `obj:={"a":1,"b":2}`, "--var", "plain=x",
		"--secret", "tok=a,b", "--secret", "other=c")
	if err != nil {
		t.Fatalf("dispatch: %v %q", err, out)
	}
	id := strings.TrimSpace(out)
	store := b.store(t)
	d, err := store.GetDispatch(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	var vars map[string]any
	if err := json.Unmarshal(d.Vars, &vars); err != nil {
		t.Fatal(err)
	}
	obj, _ := vars["obj"].(map[string]any)
	if vars["note"] != "hello, world" || vars["plain"] != "x" || len(obj) != 2 || obj["a"] != 1.0 || obj["b"] != 2.0 || len(vars) != 3 {
		t.Errorf("vars = %s", d.Vars)
	}
	ring, err := seal.ParseKeys(keys)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Sealed) != 2 {
		t.Fatalf("sealed = %v, want tok and other", d.Sealed)
	}
	for name, want := range map[string]string{"tok": "a,b", "other": "c"} {
		got, err := ring.Open(d.Sealed[name], seal.AAD(id, name))
		if err != nil || got != want {
			t.Errorf("secret %s = %q, %v; want %q", name, got, err, want)
		}
	}
}

// TestIDsAreValidated: an id that is not a UUID is refused before anything is asked of
// PostgreSQL, with a message naming the value, not a SQL error.
func TestIDsAreValidated(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, args := range [][]string{{"status", "not-a-uuid"}, {"receipts", "show", "not-a-uuid"}, {"cancel", "not-a-uuid"},
		{"receipts", "cancel", "not-a-uuid"}, {"receipts", "list", "--dispatch", "not-a-uuid"}, {"status", "01a2203a-c569-7ae3-b0c8-f27792223ad5x"}} {
		for _, dbURL := range []string{b.env["HERALD_DATABASE_URL"], "postgres://nobody@127.0.0.1:1/none"} {
			saved := b.env["HERALD_DATABASE_URL"]
			b.env["HERALD_DATABASE_URL"] = dbURL
			out, err := b.run(t, args...)
			b.env["HERALD_DATABASE_URL"] = saved
			if err == nil || !strings.Contains(err.Error(), "is not a valid id") || strings.Contains(err.Error(), "SQLSTATE") ||
				!strings.Contains(err.Error(), args[len(args)-1]) {
				t.Errorf("%v: err = %v (out %q), want a clear invalid-id error", args, err, out)
			}
		}
	}
	// A valid id in another spelling (upper case) is normalised, not refused.
	out, err := b.run(t, "status", "01A2203A-C569-7AE3-B0C8-F27792223AD5")
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("upper-case id: %v %q", err, out)
	}
}

// snakeKeys fails the test for any JSON object key that is not snake_case.
func snakeKeys(t *testing.T, what string, v any) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			for _, r := range k {
				if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '_' {
					t.Errorf("%s: key %q is not snake_case", what, k)
					break
				}
			}
			snakeKeys(t, what, e)
		}
	case []any:
		for _, e := range v {
			snakeKeys(t, what, e)
		}
	}
}

// TestJSONKeysAreSnakeCase runs every command that prints JSON and checks its keys.
func TestJSONKeysAreSnakeCase(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	store := b.store(t)
	out, err := b.run(t, "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/42", "--idempotency-key", "j1")
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out)
	rid := uuid.Must(uuid.NewV7()).String()
	now := time.Now()
	if err := store.InsertReceipts(ctx, []ledger.NewReceipt{{ID: rid, DispatchID: id, EventID: "accounts.password_reset",
		ChannelKey: "email", Transport: "email", RecipientID: "42", MaxAttempts: 3, DueAt: now.Add(time.Hour), ExpiresAt: now.Add(2 * time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.InsertMail(ctx, ledger.Mail{ReceiptID: rid, MessageID: "<m@x>", From: "a@x", To: "b@x", Subject: "s", Text: "t", HTML: "<p>h</p>"}); err != nil {
		t.Fatal(err)
	}
	if err := store.RecordRejectedTask(ctx, "herald:dispatch", "dispatch:x:0", "q", "malformed payload", []byte("{")); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/42", "--idempotency-key", "j1"},
		{"dispatch", "accounts.password_reset", "--ref", "user=users/42"},
		{"status", id}, {"receipts", "show", rid}, {"receipts", "list"}, {"dispatches"},
		{"mailbox", "list"}, {"mailbox", "show", "1"}, {"rejected"}, {"receipts", "cancel", rid}, {"cancel", id},
		{"erase", "--recipient", "b@x"},
	} {
		out, err := b.run(t, append([]string{"--json"}, args...)...)
		if err != nil {
			t.Errorf("%v: %v %q", args, err, out)
			continue
		}
		var v any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Errorf("%v: not JSON: %v %q", args, err, out)
			continue
		}
		snakeKeys(t, strings.Join(args, " "), v)
	}
}

// TestDuplicateNoteGoesToStderr: `id=$(enqueue dispatch --tx …)` holds just the id.
func TestDuplicateNoteGoesToStderr(t *testing.T) {
	t.Parallel()
	b := setup(t)
	args := []string{"--env-file", "", "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/42", "--idempotency-key", "d1"}
	var out1, out2, errOut bytes.Buffer
	getenv := func(k string) string { return b.env[k] }
	if err := run(t.Context(), args, getenv, &out1, &errOut); err != nil {
		t.Fatal(err)
	}
	if err := run(t.Context(), args, getenv, &out2, &errOut); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out1.String())
	if _, err := uuid.Parse(id); err != nil || out2.String() != id+"\n" {
		t.Errorf("stdout %q then %q, want the same id alone", out1.String(), out2.String())
	}
	if !strings.Contains(errOut.String(), "duplicate") {
		t.Errorf("stderr %q, want the duplicate note", errOut.String())
	}
}

// TestRejectedHelpSaysWhatItLists: the help names rejected_tasks, not "missing rows".
func TestRejectedHelpSaysWhatItLists(t *testing.T) {
	t.Parallel()
	b := &bundle{env: map[string]string{}}
	for _, args := range [][]string{{"--help"}, {"rejected", "--help"}} {
		out, err := b.run(t, args...)
		out = strings.Join(strings.Fields(out), " ") // as the help is wrapped
		if err != nil || strings.Contains(out, "missing rows") || !strings.Contains(out, "enqueue dispatches --status failed") ||
			!strings.Contains(out, "enqueue receipts list --status failed") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}

// TestListDispatchesAndReceipts lists failed dispatches and receipts, newest first, with filters.
func TestListDispatchesAndReceipts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	store := b.store(t)
	var ids []string
	for i := range 3 {
		out, err := b.run(t, "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/4"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, strings.TrimSpace(out))
	}
	if out, err := b.run(t, "dispatch", "--tx", "accounts.welcome", "--ref", "user=users/42"); err != nil {
		t.Fatal(err, out)
	}
	for _, id := range ids[:2] { // the two older ones fail
		if err := store.SetStatus(ctx, ledger.KindDispatch, id, ledger.DispatchFanningOut, ""); err != nil {
			t.Fatal(err)
		}
		if err := store.SetStatus(ctx, ledger.KindDispatch, id, ledger.DispatchFailed, "no row users/4x"); err != nil {
			t.Fatal(err)
		}
	}
	out, err := b.run(t, "dispatches", "--status", "failed")
	if err != nil || strings.Count(out, "\n") != 2 || strings.Index(out, ids[1]) > strings.Index(out, ids[0]) || !strings.Contains(out, ids[0]) ||
		!strings.Contains(out, "no row users/4x") {
		t.Errorf("dispatches --status failed: %v\n%s", err, out)
	}
	out, err = b.run(t, "dispatches", "--event", "accounts.password_reset", "--limit", "2")
	if err != nil || strings.Count(out, "\n") != 2 || !strings.Contains(out, ids[2]) || !strings.Contains(out, ids[1]) {
		t.Errorf("dispatches --event --limit 2: %v\n%s", err, out)
	}
	out, err = b.run(t, "--json", "dispatches")
	var ds []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err != nil || json.Unmarshal([]byte(out), &ds) != nil || len(ds) != 4 || ds[3].ID != ids[0] || ds[3].Status != "failed" {
		t.Errorf("dispatches --json: %v\n%s", err, out)
	}

	// Receipts of the newest dispatch: one failed, one scheduled.
	now := time.Now()
	var rids []string
	for _, key := range []string{"a", "b", "c"} {
		rid := uuid.Must(uuid.NewV7()).String()
		rids = append(rids, rid)
		if err := store.InsertReceipts(ctx, []ledger.NewReceipt{{ID: rid, DispatchID: ids[2], EventID: "accounts.password_reset",
			ChannelKey: key, Transport: "email", RecipientID: "42", MaxAttempts: 3, DueAt: now, ExpiresAt: now.Add(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, rid := range rids[:2] {
		if err := store.SetStatus(ctx, ledger.KindReceipt, rid, ledger.ReceiptSending, ""); err != nil {
			t.Fatal(err)
		}
		if err := store.SetStatus(ctx, ledger.KindReceipt, rid, ledger.ReceiptFailed, "550 no such user"); err != nil {
			t.Fatal(err)
		}
	}
	out, err = b.run(t, "receipts", "list", "--status", "failed", "--dispatch", ids[2])
	if err != nil || strings.Count(out, "\n") != 2 || strings.Index(out, rids[1]) > strings.Index(out, rids[0]) || !strings.Contains(out, rids[0]) ||
		!strings.Contains(out, "550 no such user") {
		t.Errorf("receipts list --status failed: %v\n%s", err, out)
	}
	out, err = b.run(t, "--json", "receipts", "list", "--limit", "1")
	var rs []struct {
		ID string `json:"id"`
	}
	if err != nil || json.Unmarshal([]byte(out), &rs) != nil || len(rs) != 1 || rs[0].ID != rids[2] {
		t.Errorf("receipts list --limit 1: %v\n%s", err, out)
	}
	for _, tc := range []struct{ args []string }{
		{[]string{"dispatches", "--status", "sent"}}, {[]string{"receipts", "list", "--status", "fanned_out"}},
		{[]string{"dispatches", "--limit", "0"}},
	} {
		if _, err := b.run(t, tc.args...); err == nil || !strings.Contains(err.Error(), "want") {
			t.Errorf("%v: err = %v, want a clear refusal", tc.args, err)
		}
	}
	out, err = b.run(t, "receipts", "list", "--status", "expired")
	if err != nil || !strings.Contains(out, "no receipts") {
		t.Errorf("empty list: %v %q", err, out)
	}
}

// TestUsage: no command prints the whole usage (and fails: nothing was done); `help` prints it
// and succeeds, as does `help COMMAND` for one command.
func TestUsage(t *testing.T) {
	t.Parallel()
	b := &bundle{env: map[string]string{}}
	all := []string{"dispatch", "status", "cancel", "rejected", "dispatches", "receipts show", "receipts list", "receipts cancel", "mailbox list",
		"mailbox show", "erase"}
	for _, tc := range []struct {
		args    []string
		fail    bool
		want    []string
		wantOut bool // the usage is on stdout
	}{
		{args: nil, fail: true, want: all},
		{args: []string{"help"}, want: all, wantOut: true},
		{args: []string{"receipts"}, fail: true, want: []string{"receipts show", "receipts list", "receipts cancel"}},
		{args: []string{"help", "receipts", "list"}, want: []string{"--status", "--dispatch", "--limit"}, wantOut: true},
	} {
		var out, errOut bytes.Buffer
		err := run(t.Context(), append([]string{"--env-file", ""}, tc.args...), func(k string) string { return b.env[k] }, &out, &errOut)
		if (err != nil) != tc.fail {
			t.Errorf("%v: err = %v, want failure %v", tc.args, err, tc.fail)
		}
		if err != nil && strings.Contains(err.Error(), "exit") {
			t.Errorf("%v: err = %q, want a reason", tc.args, err)
		}
		usage := errOut.String()
		if tc.wantOut {
			usage = out.String()
		}
		if !strings.Contains(usage, "Usage: enqueue") {
			t.Errorf("%v: no usage in %q", tc.args, usage)
		}
		for _, w := range tc.want {
			if !strings.Contains(usage, "  "+w) {
				t.Errorf("%v: usage lacks %q:\n%s", tc.args, w, usage)
			}
		}
	}
}

// TestEnvFileFoundFromASubfolder: bin/enqueue run anywhere inside the checkout reads the
// repository's .herald/dev.env; --env-file still names another.
func TestEnvFileFoundFromASubfolder(t *testing.T) { // not parallel: it changes the working directory
	b := setup(t)
	root := t.TempDir()
	sub := filepath.Join(root, "deploy", "dev")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, ".herald"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for k, v := range b.env {
		lines = append(lines, k+"="+v)
	}
	if err := os.WriteFile(filepath.Join(root, ".herald", "dev.env"), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := func(string) string { return "" }
	id := "01a2203a-c569-7ae3-b0c8-f27792223ad5"
	for _, dir := range []string{root, sub} {
		t.Chdir(dir)
		var out bytes.Buffer
		err := run(t.Context(), []string{"status", id}, empty, &out, &out)
		if err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("from %s: err = %v, want the dispatch looked up with the settings of %s/.herald/dev.env", dir, err, root)
		}
	}
	// An explicit --env-file wins; one that does not exist is an error, not silently skipped.
	other := filepath.Join(t.TempDir(), "other.env")
	if err := os.WriteFile(other, []byte("HERALD_DATABASE_URL=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(t.Context(), []string{"--env-file", other, "status", id}, empty, &out, &out); err == nil ||
		!strings.Contains(err.Error(), "HERALD_DATABASE_URL is not set") {
		t.Errorf("--env-file other: err = %v", err)
	}
	if err := run(t.Context(), []string{"--env-file", other + ".missing", "status", id}, empty, &out, &out); err == nil ||
		!strings.Contains(err.Error(), "other.env.missing") {
		t.Errorf("--env-file missing: err = %v", err)
	}
	// Outside any checkout nothing is found.
	t.Chdir(t.TempDir())
	if err := run(t.Context(), []string{"status", id}, empty, &out, &out); err == nil || !strings.Contains(err.Error(), "HERALD_DATABASE_URL is not set") {
		t.Errorf("outside a checkout: err = %v", err)
	}
}

func (b *bundle) store(t *testing.T) *ledger.Store {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), b.env["HERALD_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return ledger.New(pool)
}

// TestErase erases a recipient everywhere Herald keeps them — a delivery sent, one being sent, a
// dispatch recorded with their address, captured mail, a dispatch still queued in Redis — and
// checks the report, the warning and exit status while a delivery is in flight, the second run
// that finishes the job, and that the audit row names nobody.
func TestErase(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	store := b.store(t)
	addr := strings.ToUpper("canary." + strings.TrimPrefix(testenv.Name("c"), "c_") + "@example.net")
	name := "Nym" + strings.TrimPrefix(testenv.Name("c"), "c_")
	out, err := b.run(t, "dispatch", "--tx", "accounts.password_reset", "--ref", "user=users/42", "--var", "cc="+addr)
	if err != nil {
		t.Fatal(err)
	}
	named := strings.TrimSpace(out)
	out, err = b.run(t, "dispatch", "accounts.password_reset", "--ref", "user=users/42", "--var", "cc="+addr)
	if err != nil {
		t.Fatal(err)
	}
	queued := strings.TrimSpace(out)
	var sent, sending string
	for _, key := range []string{"email", "reminder"} {
		id := uuid.Must(uuid.NewV7()).String()
		if err := store.InsertReceipts(ctx, []ledger.NewReceipt{{ID: id, DispatchID: named, EventID: "accounts.password_reset", ChannelKey: key,
			Transport: "email", RecipientID: "42", Recipient: ledger.Recipient{Address: strings.ToLower(addr), Name: name}, MaxAttempts: 3,
			Status: ledger.ReceiptSending, ClaimFor: time.Minute, DueAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
		if key == "email" {
			sent = id
		} else {
			sending = id
		}
	}
	if _, err := store.FinishReceipt(ctx, sent, 1, ledger.Outcome{Status: ledger.ReceiptSent, Subject: "Hello " + name,
		MessageID: "<" + sent + "@x>", ProviderResponse: "250 OK"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.InsertMail(ctx, ledger.Mail{ReceiptID: sent, MessageID: "<" + sent + "@x>", From: "a@x", To: name + " <" + addr + ">",
		Subject: "Hello " + name, Text: "t"}); err != nil {
		t.Fatal(err)
	}
	// A delivery is being sent: it is left, the command says so and fails.
	out, err = b.run(t, "erase", "--recipient", addr, "--actor", "dpo")
	if err == nil || !strings.Contains(err.Error(), "run the same enqueue erase again") || !strings.Contains(out, "1 delivery being sent") ||
		!strings.Contains(out, "1 erased") || !strings.Contains(out, "1 queued dispatch canceled and deleted") {
		t.Fatalf("erase with a delivery in flight: %v\n%s", err, out)
	}
	if strings.Contains(strings.ToLower(out+err.Error()), strings.ToLower(addr)) {
		t.Errorf("the output repeats the address:\n%s", out)
	}
	if st, _ := store.Status(ctx, ledger.KindDispatch, queued); st != ledger.DispatchCanceled {
		t.Errorf("the dispatch queued in Redis: %q, want a canceled tombstone", st)
	}
	if queuedNow, err := testEnv(t, b.env).queued(ctx, queued); err != nil || queuedNow {
		t.Errorf("the dispatch naming them is still queued in Redis: %v %v", queuedNow, err)
	}
	// It settles; the same erasure again finishes the job.
	if _, err := store.FinishReceipt(ctx, sending, 1, ledger.Outcome{Status: ledger.ReceiptSent, Subject: "Hello " + name,
		ProviderResponse: "250 OK for " + addr}); err != nil {
		t.Fatal(err)
	}
	out, err = b.run(t, "--json", "erase", "--recipient", strings.ToLower(addr))
	var res struct {
		AuditID        int64 `json:"audit_id"`
		ReceiptsErased int64 `json:"receipts_erased"`
		InFlight       int64 `json:"in_flight"`
		Complete       bool  `json:"complete"`
	}
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || !res.Complete || res.ReceiptsErased != 1 || res.AuditID == 0 {
		t.Fatalf("second erase: %v\n%s", err, out)
	}
	pool := b.pool(t)
	for _, line := range testenv.DumpHerald(t, pool) { // every table and column, bytea included
		if l := strings.ToLower(line); strings.Contains(l, strings.ToLower(addr)) || strings.Contains(l, strings.ToLower(name)) {
			t.Errorf("the person survives the erasure in %s", line)
		}
	}
	r, err := store.GetReceipt(ctx, sent)
	if err != nil || r.Status != ledger.ReceiptSent || r.MessageID != "<"+sent+"@x>" || r.SentAt == nil || r.RecipientID != "erased:"+sent {
		t.Errorf("the sent delivery after the erasure: %+v %v", r, err)
	}
	var actors string
	if err := pool.QueryRow(ctx, `SELECT string_agg(actor || ':' || action, ',' ORDER BY id) FROM herald.audit_log`).Scan(&actors); err != nil ||
		actors != "dpo:erase_recipient,cli:erase_recipient" {
		t.Errorf("audit rows: %q %v", actors, err)
	}
}

// TestEraseRefusesAPartialAddress: "--recipient @example.net" (a domain, a typo) would erase
// everyone at that domain; it is refused with a clear error before Redis or PostgreSQL is
// touched: the dispatch naming someone there stays queued, and no audit row is written.
func TestEraseRefusesAPartialAddress(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	store := b.store(t)
	hex := strings.TrimPrefix(testenv.Name("c"), "c_")
	out, err := b.run(t, "dispatch", "accounts.password_reset", "--ref", "user=users/42", "--var", "cc=ann"+hex+"@example.net")
	if err != nil {
		t.Fatal(err)
	}
	queued := strings.TrimSpace(out)
	for _, partial := range []string{"@example.net", "ann" + hex + "@", "Ann <ann" + hex + "@example.net>"} {
		out, err := b.run(t, "erase", "--recipient", partial)
		if !errors.Is(err, ledger.ErrIncompleteAddress) || !strings.Contains(err.Error(), "complete address") {
			t.Errorf("erase --recipient %q: %v\n%s", partial, err, out)
		}
	}
	if queuedNow, err := testEnv(t, b.env).queued(ctx, queued); err != nil || !queuedNow {
		t.Errorf("the dispatch naming someone at the domain left the queue: %v %v", queuedNow, err)
	}
	if st, _ := store.Status(ctx, ledger.KindDispatch, queued); st == ledger.DispatchCanceled {
		t.Errorf("the dispatch naming someone at the domain was canceled")
	}
	var audits int
	if err := b.pool(t).QueryRow(ctx, `SELECT count(*) FROM herald.audit_log`).Scan(&audits); err != nil || audits != 0 {
		t.Errorf("%d audit rows after refused erasures (%v)", audits, err)
	}
}

func (b *bundle) pool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(t.Context(), b.env["HERALD_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// TestRejectedRequeue: a task held for a newer worker is listed as requeueable and `rejected
// requeue ID` enqueues its kept payload again on its queue, then the row is gone; a malformed
// task kept no payload and cannot be requeued.
func TestRejectedRequeue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	store := b.store(t)
	q := b.env["HERALD_QUEUE"]
	payload := []byte(`{"v":2,"dispatch_id":"0190f5a8-0000-7000-8000-0000000000ab","shape":"new"}`)
	held, err := store.HoldRejectedTask(ctx, "herald:dispatch", "dispatch:held:0", q, "payload version 2 is newer", payload)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.RecordRejectedTask(ctx, "herald:dispatch", "dispatch:broken:0", q, "malformed payload", []byte("{")); err != nil {
		t.Fatal(err)
	}
	out, err := b.run(t, "rejected", "--limit", "50")
	if err != nil || !strings.Contains(out, fmt.Sprintf("%d ", held)) || !strings.Contains(out, "[requeueable] payload version 2") {
		t.Fatalf("rejected lists the held task with its id: %v\n%s", err, out)
	}
	rows, err := store.ListRejectedTasks(ctx, 50)
	if err != nil {
		t.Fatal(err)
	}
	var broken int64
	for _, r := range rows {
		if r.TaskID == "dispatch:broken:0" && r.Queue == q {
			broken = r.ID
		}
	}
	if out, err := b.run(t, "rejected", "requeue", strconv.FormatInt(broken, 10)); err == nil || !strings.Contains(err.Error(), "kept no payload") {
		t.Fatalf("requeue of a malformed task: %v %q", err, out)
	}
	out, err = b.run(t, "--json", "rejected", "requeue", strconv.FormatInt(held, 10))
	if err != nil {
		t.Fatalf("requeue: %v %q", err, out)
	}
	var res struct {
		TaskID string `json:"task_id"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.TaskID == "" {
		t.Fatalf("requeue output %q: %v", out, err)
	}
	ropt, err := asynq.ParseRedisURI(b.env["HERALD_REDIS_URL"])
	if err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspector(ropt)
	defer insp.Close()
	info, err := insp.GetTaskInfo(q, res.TaskID)
	if err != nil || info.Type != "herald:dispatch" || !bytes.Equal(info.Payload, payload) {
		t.Fatalf("the requeued task in queue %s: %+v %v", q, info, err)
	}
	if _, err := b.run(t, "rejected", "requeue", strconv.FormatInt(held, 10)); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("a second requeue of the same row: %v", err)
	}
}

// testEnv is the command environment run builds, on the settings in vars.
func testEnv(t *testing.T, vars map[string]string) *env {
	t.Helper()
	get := func(k string) string { return vars[k] }
	cfg, err := herald.ClientConfigFromEnv(get)
	if err != nil {
		t.Fatal(err)
	}
	return &env{getenv: get, cfg: cfg}
}

// TestBadSettingsRefuseOnlyWhatUsesThem: a bad variable a reading command does not use (the
// worker's log format, a concurrency) leaves it working, with a warning; a command that enqueues
// takes the producer's settings and refuses them.
func TestBadSettingsRefuseOnlyWhatUsesThem(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.env["HERALD_LOG_FORMAT"] = "text"
	b.env["HERALD_CONCURRENCY"] = "ten"
	out, err := b.run(t, "dispatches")
	if err != nil || !strings.Contains(out, "warning: HERALD_CONCURRENCY: want a whole number") || !strings.Contains(out, "HERALD_LOG_FORMAT") {
		t.Fatalf("dispatches with bad worker settings: %v\n%s", err, out)
	}
	if _, err := b.run(t, "dispatch", "accounts.password_reset", "--ref", "user=users/42"); err == nil ||
		!strings.Contains(err.Error(), "HERALD_CONCURRENCY") {
		t.Fatalf("dispatch with bad settings: %v, want them refused", err)
	}
}
