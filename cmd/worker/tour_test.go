package main

import (
	"bufio"
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

	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestReadmeTour is the README's five-minute tour as a test: build the binaries, start the
// worker with the development mailbox, dispatch with enqueue, read the mail and the receipt.
func TestReadmeTour(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	for _, name := range []string{"worker", "enqueue"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(bin, name), "../"+name).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
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

	w := exec.Command(filepath.Join(bin, "worker"))
	w.Env = env
	stderr, _ := w.StderrPipe()
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	started := make(chan struct{})
	var logs testenv.LogBuffer
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			_, _ = logs.Write([]byte(sc.Text() + "\n"))
			if !once && strings.Contains(sc.Text(), "herald worker started") {
				once = true
				close(started)
			}
		}
		exited <- w.Wait()
	}()
	t.Cleanup(func() { _ = w.Process.Kill() })
	select {
	case <-started:
	case err := <-exited:
		t.Fatalf("worker exited: %v\n%s", err, logs.String())
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not start")
	}

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
	out, err = cmd("enqueue", "--json", "mailbox", "list")
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

	_ = w.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("worker exit after Ctrl-C: %v\n%s", err, logs.String())
		}
	case <-time.After(45 * time.Second):
		t.Fatal("worker did not stop on SIGINT")
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
