package main

import (
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const keys = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

// TestWelcomeProducer: run enqueues one herald:dispatch task on the configured queue and prints
// its dispatch id (the worker's side is cmd/welcome-worker's test).
func TestWelcomeProducer(t *testing.T) {
	t.Parallel()
	queue := testenv.Queue(t)
	env := map[string]string{"HERALD_REDIS_URL": testenv.RedisURL(t), "HERALD_SECRET_KEYS": keys, "HERALD_QUEUE": queue}
	var out strings.Builder
	if err := run(t.Context(), []string{"42"}, func(k string) string { return env[k] }, &out); err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(out.String())
	if id == "" {
		t.Fatal("run printed no dispatch id")
	}
	insp := asynq.NewInspector(testenv.RedisOpt(t))
	defer insp.Close()
	tasks, err := insp.ListPendingTasks(queue)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 1 || !strings.HasPrefix(tasks[0].Type, herald.TaskPrefix) {
		t.Fatalf("queue %s holds %v, want one Herald task", queue, tasks)
	}
	if !strings.Contains(string(tasks[0].Payload), id) || !strings.Contains(string(tasks[0].Payload), "accounts.welcome") {
		t.Errorf("task payload %s does not name dispatch %s of accounts.welcome", tasks[0].Payload, id)
	}
}

func TestWelcomeProducerErrors(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		args []string
		env  map[string]string
		want string
	}{
		"no user id":     {nil, map[string]string{"HERALD_SECRET_KEYS": keys}, "usage: welcome-producer USER_ID"},
		"no secret keys": {[]string{"42"}, map[string]string{}, "HERALD_SECRET_KEYS"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := run(t.Context(), c.args, func(k string) string { return c.env[k] }, &strings.Builder{})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("run: %v, want an error containing %q", err, c.want)
			}
		})
	}
}
