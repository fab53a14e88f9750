package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.Main(m, func() {
		if binDir != "" {
			_ = os.RemoveAll(binDir)
		}
	})
}

// TestReadmeTour is the README's five-minute tour as a test: build the binaries, start the
// worker with the development mailbox, dispatch with enqueue, read the mail and the receipt.
func TestReadmeTour(t *testing.T) {
	t.Parallel()
	bin := binaries(t)
	resetKey := bytes.Repeat([]byte{7}, 32)
	env := append(os.Environ(),
		"HERALD_REDIS_URL="+testenv.RedisURL(t),
		"HERALD_DATABASE_URL="+testenv.DatabaseURL(t),
		"HERALD_QUEUE="+testenv.Queue(t),
		"HERALD_SMTP_URL=capture://",
		"HERALD_MAIL_FROM=Herald Dev <noreply@herald.localhost>",
		"HERALD_SECRET_KEYS=dev1:"+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)),
		"HERALD_HTTP_ADDR=127.0.0.1:0",
		"HERALD_LOG_FORMAT=json",
		"HERALD_EXAMPLE_RESET_KEY="+base64.StdEncoding.EncodeToString(resetKey),
		"HERALD_EXAMPLE_BASE_URL=http://localhost:3000",
	)
	cmd := func(name string, args ...string) (string, error) {
		c := exec.Command(filepath.Join(bin, name), args...)
		c.Env = env
		c.Dir = t.TempDir() // no .herald/dev.env here: the environment is the only source
		out, err := c.CombinedOutput()
		return string(out), err
	}
	if out, err := cmd("worker", "migrate"); err != nil {
		t.Fatalf("migrate: %v %s", err, out)
	}
	if out, err := cmd("worker", "seed-examples"); err != nil || !strings.Contains(out, "example user 42") {
		t.Fatalf("seed: %v %s", err, out)
	}

	w := startWorker(t, env)
	logs := w.logs

	out, err := cmd("enqueue", "dispatch", "accounts.password_reset", "--ref", "user=users/42")
	if err != nil {
		t.Fatalf("dispatch: %v %s", err, out)
	}
	id := strings.TrimSpace(out)

	var status struct {
		Status   string
		Receipts []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err = cmd("enqueue", "--json", "status", id)
		if err == nil {
			_ = json.Unmarshal([]byte(out), &status)
			if len(status.Receipts) == 1 && status.Receipts[0].Status == "sent" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("receipt not sent: %v %s\n%s", err, out, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	rid := status.Receipts[0].ID

	out, err = cmd("enqueue", "mailbox", "list")
	if err != nil || !strings.Contains(out, "Reset your password") || !strings.Contains(out, "ada@example.com") {
		t.Fatalf("mailbox list: %v %s", err, out)
	}
	out, _ = cmd("enqueue", "--json", "mailbox", "list")
	var mails []struct {
		ID        int64  `json:"id"`
		ReceiptID string `json:"receipt_id"`
	}
	if err := json.Unmarshal([]byte(out), &mails); err != nil || len(mails) != 1 || mails[0].ReceiptID != rid {
		t.Fatalf("mailbox list --json: %v %s", err, out)
	}
	out, err = cmd("enqueue", "mailbox", "show", "1")
	if err != nil || !strings.Contains(out, "Message-ID: <"+rid+"@herald.localhost>") {
		t.Fatalf("mailbox show: %v %s", err, out)
	}
	i := strings.Index(out, "http://localhost:3000/reset-password?token=")
	if i < 0 {
		t.Fatalf("no reset link in %s", out)
	}
	link, _ := url.Parse(strings.Fields(out[i:])[0])
	if uid, err := (&examples.Tokens{Key: resetKey}).Verify(link.Query().Get("token")); err != nil || uid != "42" {
		t.Fatalf("the mailed token does not verify: %q %v", uid, err)
	}
	out, err = cmd("enqueue", "receipts", "show", rid)
	if err != nil || !strings.Contains(out, "status      sent") || !strings.Contains(out, "captured in the development mailbox") {
		t.Fatalf("receipts show: %v %s", err, out)
	}
	if strings.Contains(logs.String(), link.Query().Get("token")) {
		t.Fatal("the reset token appears in the worker's logs")
	}

	_ = w.cmd.Process.Signal(syscall.SIGINT)
	if err := w.wait(t, 45*time.Second); err != nil {
		t.Fatalf("worker exit after Ctrl-C: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "herald worker stopped") {
		t.Fatalf("logs: %s", logs.String())
	}
}

func TestWorkerRefusesMissingSettings(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	err := run(t.Context(), nil, func(k string) string {
		if k == "HERALD_REDIS_URL" {
			return "redis://127.0.0.1:6379/0"
		}
		return ""
	}, &out, &errOut)
	if err == nil {
		t.Fatal("started without settings")
	}
	for _, want := range []string{"HERALD_DATABASE_URL is not set", "HERALD_SMTP_URL is not set", "HERALD_SECRET_KEYS is not set", "HERALD_MAIL_FROM is not set"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

// TestCrashRecovery kills a worker process (SIGKILL) in the middle of an SMTP send and starts
// another: the delivery is reclaimed once its lease expires, flagged in_doubt, sent, and
// nothing is lost.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	smtp := emailtest.Start(t)
	env := append(os.Environ(),
		"HERALD_REDIS_URL="+testenv.RedisURL(t),
		"HERALD_DATABASE_URL="+testenv.DatabaseURL(t),
		"HERALD_QUEUE="+testenv.Queue(t),
		"HERALD_SMTP_URL="+smtp.URL(),
		"HERALD_MAIL_FROM=Herald <noreply@herald.test>",
		"HERALD_SECRET_KEYS=dev1:"+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32)),
		"HERALD_HTTP_ADDR=off",
		"HERALD_LOG_FORMAT=json",
		"HERALD_EXAMPLE_RESET_KEY="+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)),
		// Short timings so the lease of the killed worker expires within the test.
		"HERALD_SEND_TIMEOUT=20s", "HERALD_LEASE=25s", "HERALD_TASK_TIMEOUT=22s", "HERALD_SHUTDOWN_TIMEOUT=21s",
		"HERALD_PROMOTER_INTERVAL=200ms",
	)
	run := func(name string, args ...string) string {
		c := exec.Command(filepath.Join(binaries(t), name), args...)
		c.Env, c.Dir = env, t.TempDir()
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	run("worker", "migrate")
	run("worker", "seed-examples")
	inData := smtp.SetDelay(10 * time.Minute) // the relay hangs in DATA: the send is in flight
	first := startWorker(t, env)
	id := run("enqueue", "dispatch", "accounts.password_reset", "--ref", "user=users/42")
	select {
	case <-inData:
	case <-time.After(20 * time.Second):
		t.Fatal("the send never started")
	}
	_ = first.cmd.Process.Kill() // SIGKILL: no shutdown, no final update
	_ = first.wait(t, 10*time.Second)
	// A killed asynq server cannot take its registration with it; drop what this test left.
	t.Cleanup(func() { testenv.ForgetAsynqServer(testenv.RedisOpt(t), first.cmd.Process.Pid) })
	smtp.SetDelay(0)

	second := startWorker(t, env)
	deadline := time.Now().Add(60 * time.Second) // lease 25s + promoter + send
	var status struct {
		Receipts []struct {
			Status  string `json:"status"`
			Attempt int    `json:"attempt"`
			InDoubt bool   `json:"in_doubt"`
		} `json:"receipts"`
	}
	for {
		_ = json.Unmarshal([]byte(run("enqueue", "--json", "status", id)), &status)
		if len(status.Receipts) == 1 && status.Receipts[0].Status == "sent" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered: %+v\n%s", status, second.logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := status.Receipts[0]
	if !r.InDoubt || r.Attempt != 2 {
		t.Fatalf("recovered receipt: %+v", r)
	}
	if n := len(smtp.Messages()); n != 1 {
		t.Fatalf("%d emails: the killed send never completed, so exactly one must have arrived", n)
	}
	if !strings.Contains(second.logs.String(), "in doubt") {
		t.Fatal("the reclaim was not logged as in doubt")
	}
}
