package herald_test

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
)

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	cfg, err := herald.ConfigFromEnv(envOf(baseEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SendTimeout != 30*time.Second || cfg.Lease != 2*time.Minute || cfg.Concurrency != 10 || cfg.Queue != "herald" ||
		cfg.Migrate != "auto" || cfg.HTTPAddr != ":8080" || cfg.IdempotencyWindow != 24*time.Hour {
		t.Fatalf("defaults: %+v", cfg)
	}
	for _, tc := range []struct {
		name string
		set  map[string]string
		want string
	}{
		{"no redis", map[string]string{"HERALD_REDIS_URL": ""}, "HERALD_REDIS_URL is not set"},
		{"no smtp", map[string]string{"HERALD_SMTP_URL": ""}, "HERALD_SMTP_URL is not set"},
		{"bad smtp", map[string]string{"HERALD_SMTP_URL": "smtp://u:smtp-Pa55@host?tls=maybe"}, "tls="},
		{"no keys", map[string]string{"HERALD_SECRET_KEYS": ""}, "HERALD_SECRET_KEYS is not set"},
		{"bad keys", map[string]string{"HERALD_SECRET_KEYS": "k1:c2hvcnQ="}, "HERALD_SECRET_KEYS"},
		{"bad from", map[string]string{"HERALD_MAIL_FROM": "not an address"}, "HERALD_MAIL_FROM"},
		{"bad duration", map[string]string{"HERALD_SEND_TIMEOUT": "soon"}, "HERALD_SEND_TIMEOUT: want a duration"},
		{"bad number", map[string]string{"HERALD_CONCURRENCY": "many"}, "HERALD_CONCURRENCY: want a whole number"},
		{"lease below send", map[string]string{"HERALD_LEASE": "10s"}, "HERALD_LEASE"},
		{"bad migrate", map[string]string{"HERALD_MIGRATE": "maybe"}, "HERALD_MIGRATE"},
		{"bad redis", map[string]string{"HERALD_REDIS_URL": "http://:redis-Pa55@x"}, "HERALD_REDIS_URL is not a valid"},
		{"bad db", map[string]string{"HERALD_DATABASE_URL": "postgres://u:db-Pa55@h:notaport/x"}, "HERALD_DATABASE_URL is not a valid"},
		{"negative timeout", map[string]string{"HERALD_SEND_TIMEOUT": "-5s"}, "HERALD_SEND_TIMEOUT=-5s: must not be negative"},
		{"negative attempts", map[string]string{"HERALD_MAX_ATTEMPTS": "-3"}, "HERALD_MAX_ATTEMPTS=-3: must not be negative"},
		{"negative backoff", map[string]string{"HERALD_BACKOFF_MIN": "-1s"}, "HERALD_BACKOFF_MIN=-1s"},
		{"negative horizon", map[string]string{"HERALD_HORIZON": "-1h"}, "HERALD_HORIZON=-1h0m0s"},
		{"retention within the newer payload time", map[string]string{"HERALD_RETENTION": "48h", "HERALD_NEWER_PAYLOAD_FOR": "48h"},
			"HERALD_RETENTION (48h0m0s) must exceed HERALD_NEWER_PAYLOAD_FOR (48h0m0s)"},
		{"retention within the default window", map[string]string{"HERALD_RETENTION": "24h"}, "must exceed HERALD_IDEMPOTENCY_WINDOW (24h0m0s)"},
		{"one asynq retry", map[string]string{"HERALD_ASYNQ_RETRIES": "1"}, "HERALD_ASYNQ_RETRIES: asynq retries 1"},
		{"backoff max below min", map[string]string{"HERALD_BACKOFF_MIN": "1m", "HERALD_BACKOFF_MAX": "30s"}, "HERALD_BACKOFF_MAX (30s) is below HERALD_BACKOFF_MIN (1m0s)"},
		{"bad bool", map[string]string{"HERALD_DISABLE_INLINE": "sometimes"}, "HERALD_DISABLE_INLINE: want true or false"},
		{"bad chunk", map[string]string{"HERALD_FANOUT_CHUNK": "-1"}, "HERALD_FANOUT_CHUNK=-1: must not be negative"},
		{"retention within the idempotency window", map[string]string{"HERALD_RETENTION": "48h", "HERALD_IDEMPOTENCY_WINDOW": "72h"},
			"HERALD_RETENTION (48h0m0s) must exceed HERALD_IDEMPOTENCY_WINDOW (72h0m0s)"},
	} {
		env := baseEnv()
		for k, v := range tc.set {
			env[k] = v
		}
		_, err := herald.ConfigFromEnv(envOf(env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
			continue
		}
		for _, secret := range []string{"smtp-Pa55", "db-Pa55", "redis-Pa55", "c2hvcnQ", "AAECAwQF"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%s: error echoes a secret: %v", tc.name, err)
			}
		}
	}
}

// TestEverySettingIsReachable: every engine setting can be set from the environment (it is a
// field of the one Config with an env tag), and takes effect: a non-default value survives
// ConfigFromEnv and WithDefaults.
func TestEverySettingIsReachable(t *testing.T) {
	t.Parallel()
	env := baseEnv()
	for k, v := range map[string]string{"HERALD_DELAYED_TASK_CHECK_INTERVAL": "2s", "HERALD_REQUEUE_AFTER": "45s",
		"HERALD_SWEEP_INTERVAL": "3m", "HERALD_MISSING_ROW_RETRIES": "5", "HERALD_MISSING_ROW_DELAY": "4s",
		"HERALD_FANOUT_CHUNK": "250", "HERALD_DISABLE_INLINE": "true", "HERALD_ASYNQ_RETRIES": "4",
		"HERALD_DISABLE_OUTBOX_NOTIFY": "true"} {
		env[k] = v
	}
	cfg, err := herald.ConfigFromEnv(envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	want := herald.Config{DelayedTaskCheckInterval: 2 * time.Second, RequeueAfter: 45 * time.Second, SweepInterval: 3 * time.Minute,
		MissingRowRetries: 5, MissingRowDelay: 4 * time.Second, FanoutChunk: 250, DisableInline: true, AsynqRetries: 4, DisableOutboxNotify: true}
	got := herald.Config{DelayedTaskCheckInterval: cfg.DelayedTaskCheckInterval, RequeueAfter: cfg.RequeueAfter, SweepInterval: cfg.SweepInterval,
		MissingRowRetries: cfg.MissingRowRetries, MissingRowDelay: cfg.MissingRowDelay, FanoutChunk: cfg.FanoutChunk,
		DisableInline: cfg.DisableInline, AsynqRetries: cfg.AsynqRetries, DisableOutboxNotify: cfg.DisableOutboxNotify}
	if !reflect.DeepEqual(got.WithDefaults(), want.WithDefaults()) {
		t.Fatalf("read %+v, want %+v", got, want)
	}
}

// TestWithDefaultsFillsEverySetting: after WithDefaults no setting with a documented default is
// zero (a field added without its default would run as 0).
func TestWithDefaultsFillsEverySetting(t *testing.T) {
	t.Parallel()
	cfg := herald.Config{}.WithDefaults()
	v := reflect.ValueOf(cfg)
	for i := range v.NumField() {
		f := v.Type().Field(i)
		tag := f.Tag.Get("env")
		if tag == "-" || f.Type.Kind() == reflect.Bool {
			continue // not from the environment, or false by default
		}
		switch tag { // settings that are required or have no default
		case "HERALD_REDIS_URL", "HERALD_DATABASE_URL", "HERALD_SMTP_URL", "HERALD_SMTP_CA_FILE", "HERALD_MAIL_FROM",
			"HERALD_MESSAGE_ID_DOMAIN", "HERALD_SECRET_KEYS", "HERALD_ADMIN_TOKEN":
			continue
		}
		if v.Field(i).IsZero() {
			t.Errorf("%s (%s) has no default after WithDefaults", f.Name, tag)
		}
	}
}

// TestEverySettingHasAREADMERow: adding a setting means one Config field and one row of the
// README's configuration table; this test holds the second half.
func TestEverySettingHasAREADMERow(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\| (.+?) \|`).FindAllStringSubmatch(string(readme), -1) {
		for _, name := range regexp.MustCompile("`(HERALD_[A-Z_]+)`").FindAllStringSubmatch(m[1], -1) {
			rows[name[1]] = true
		}
	}
	typ := reflect.TypeFor[herald.Config]()
	for i := range typ.NumField() {
		if tag := typ.Field(i).Tag.Get("env"); tag != "-" && !rows[tag] {
			t.Errorf("Config.%s (%s) has no row in the README's configuration table", typ.Field(i).Name, tag)
		}
	}
}

// TestClientConfigFromEnv: a producer or a tool needs none of the worker's settings; what is set
// is still checked, and NewClient asks for the secret keys.
func TestClientConfigFromEnv(t *testing.T) {
	t.Parallel()
	cfg, err := herald.ClientConfigFromEnv(envOf(map[string]string{"HERALD_QUEUE": "fleet_a"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Queue != "fleet_a" || cfg.IdempotencyWindow != 24*time.Hour || cfg.TaskTimeout != time.Minute || cfg.AsynqRetries != 8 {
		t.Fatalf("client settings: %+v", cfg)
	}
	if _, err := herald.NewClient(cfg); err == nil || !strings.Contains(err.Error(), "HERALD_SECRET_KEYS is not set") {
		t.Fatalf("NewClient without keys: %v", err)
	}
	for set, want := range map[string]string{"HERALD_REDIS_URL": "HERALD_REDIS_URL is not a valid", "HERALD_ASYNQ_RETRIES": "HERALD_ASYNQ_RETRIES"} {
		val := map[string]string{"HERALD_REDIS_URL": "http://:redis-Pa55@x", "HERALD_ASYNQ_RETRIES": "1"}[set]
		_, err := herald.ClientConfigFromEnv(envOf(map[string]string{set: val, "HERALD_SECRET_KEYS": keys}))
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "redis-Pa55") {
			t.Errorf("%s=%s: %v, want %q without the password", set, val, err, want)
		}
	}
	// A producer sets the deadline workers run each task under: it must leave room for a send.
	if _, err := herald.ClientConfigFromEnv(envOf(map[string]string{"HERALD_TASK_TIMEOUT": "20s"})); err == nil ||
		!strings.Contains(err.Error(), "HERALD_TASK_TIMEOUT (20s) must exceed HERALD_SEND_TIMEOUT (30s)") {
		t.Errorf("a producer's task timeout below the send timeout: %v", err)
	}
	if _, err := herald.ClientConfigFromEnv(envOf(map[string]string{"HERALD_TASK_TIMEOUT": "7s", "HERALD_SEND_TIMEOUT": "2s"})); err != nil {
		t.Errorf("the workers' own timeouts: %v", err)
	}
	for retries, refused := range map[int]bool{1: true, 0: false, 2: false} {
		c, err := herald.NewClient(herald.Config{SecretKeys: keys, AsynqRetries: retries})
		if c != nil {
			_ = c.Close()
		}
		if (err != nil) != refused {
			t.Errorf("NewClient with AsynqRetries %d: %v, want refused %v", retries, err, refused)
		}
	}
}
