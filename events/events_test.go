package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/events"
)

func TestParseRef(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in      string
		want    events.Ref
		wantErr string
	}{
		{in: "user=users/42", want: events.Ref{Name: "user", Resource: "users", ID: "42"}},
		{in: "order=orders/a/b", want: events.Ref{Name: "order", Resource: "orders", ID: "a/b"}},
		{in: "user", wantErr: "want name=resource/id"},
		{in: "user=users", wantErr: "want name=resource/id"},
		{in: "user=users/", wantErr: "id must be"},
		{in: "1user=users/1", wantErr: "ref name"},
		{in: "user=us-ers/1", wantErr: "resource"},
	} {
		got, err := events.ParseRef(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseRef(%q) error = %v, want containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
		if got.String() != tc.in {
			t.Errorf("String() = %q, want %q", got.String(), tc.in)
		}
	}
}

func FuzzParseRef(f *testing.F) {
	f.Add("user=users/42")
	f.Add("=/")
	f.Add("a=b/\x00")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := events.ParseRef(s)
		if err != nil {
			return
		}
		if r.Validate() != nil {
			t.Fatalf("ParseRef(%q) accepted an invalid ref %+v", s, r)
		}
		back, err := events.ParseRef(r.String())
		if err != nil || back != r {
			t.Fatalf("round trip of %q: %+v, %v", s, back, err)
		}
	})
}

func TestValidateChannels(t *testing.T) {
	t.Parallel()
	ok := []events.Channel{{Key: "now", Transport: "email"}, {Key: "later", Transport: "email", Time: events.In(time.Hour)}}
	if err := events.ValidateChannels(ok); err != nil {
		t.Fatalf("two email channels with distinct keys: %v", err)
	}
	for name, chs := range map[string][]events.Channel{
		"duplicate key": {{Key: "a", Transport: "email"}, {Key: "a", Transport: "in_app"}},
		"no key":        {{Transport: "email"}},
		"no transport":  {{Key: "a"}},
	} {
		if err := events.ValidateChannels(chs); !errors.Is(err, events.ErrInvalidChannels) {
			t.Errorf("%s: err = %v, want ErrInvalidChannels", name, err)
		}
	}
}

func TestTimeDueAt(t *testing.T) {
	t.Parallel()
	acc := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		t    events.Time
		want time.Time
	}{
		{events.Immediately(), acc},
		{events.In(2 * time.Second), acc.Add(2 * time.Second)},
		{events.At(acc.Add(time.Hour)), acc.Add(time.Hour)},
		{events.At(acc.Add(-time.Hour)), acc},
	} {
		if got := tc.t.DueAt(acc); !got.Equal(tc.want) {
			t.Errorf("%v.DueAt = %v, want %v", tc.t, got, tc.want)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	t.Parallel()
	const v = "s3cr3t-value"
	s := events.NewSecret(v)
	js, _ := json.Marshal(map[string]any{"token": s})
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "token", s)
	for name, out := range map[string]string{
		"%v": fmt.Sprintf("%v", s), "%s": fmt.Sprintf("%s", s), "%q": fmt.Sprintf("%q", s),
		"%#v": fmt.Sprintf("%#v", s), "%+v struct": fmt.Sprintf("%+v", struct{ T events.Secret }{s}),
		"json": string(js), "slog": logged.String(), "error": fmt.Errorf("mint: %v", s).Error(),
	} {
		if strings.Contains(out, v) {
			t.Errorf("%s form leaks the secret: %s", name, out)
		}
		if !strings.Contains(out, "REDACTED") {
			t.Errorf("%s form = %q, want [REDACTED]", name, out)
		}
	}
	if s.Reveal() != v {
		t.Fatalf("Reveal = %q", s.Reveal())
	}
}

func TestSampleHelpersCarryMarker(t *testing.T) {
	t.Parallel()
	for _, s := range []string{events.SampleString("token"), events.SampleEmail("alice"), events.SampleID(), events.SampleString("")} {
		if !events.ContainsSample(s) {
			t.Errorf("%q has no sample marker", s)
		}
	}
	if events.ContainsSample("alice@example.com") {
		t.Error("a real address reported as sample")
	}
	for _, c := range events.SampleMarker {
		if c != '-' && c != '_' && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') {
			t.Fatalf("marker has %q outside [A-Za-z0-9_-]", c)
		}
	}
}

type ev struct{ id string }

func (e ev) ID() string { return e.id }
func (ev) Channels(context.Context, *events.Dispatch) ([]events.Channel, error) {
	return nil, nil
}
func (ev) Recipients(context.Context, *events.Dispatch, events.Channel) ([]events.Recipient, error) {
	return nil, nil
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	r := events.NewRegistry()
	if err := r.Register(ev{"a.b"}, ev{"a.c"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ev{"a.b"}); err == nil {
		t.Fatal("duplicate id accepted")
	}
	if err := r.Register(ev{"x.y"}, ev{"x.y"}); err == nil {
		t.Fatal("duplicate within one call accepted")
	}
	if _, err := r.Lookup("x.y"); !errors.Is(err, events.ErrUnknownEvent) {
		t.Fatalf("failed Register left x.y behind: %v", err)
	}
	if err := r.Register(ev{"Bad ID"}); err == nil {
		t.Fatal("malformed id accepted")
	}
	if got := len(r.Events()); got != 2 {
		t.Fatalf("Events() = %d, want 2", got)
	}
	l := events.LoaderFunc(func(context.Context, events.Ref) (any, error) { return nil, events.ErrNotFound })
	if err := r.RegisterLoader("users", l); err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterLoader("users", l); err == nil {
		t.Fatal("duplicate loader accepted")
	}
}

func TestMetadataDefaults(t *testing.T) {
	t.Parallel()
	m := events.MetadataOf(ev{"accounts.password_reset"})
	if m.Domain != "accounts" || m.Category != "accounts.password_reset" || !m.UserConfigurable {
		t.Fatalf("defaults = %+v", m)
	}
	if got := events.MaxAgeOf(ev{"a.b"}, events.Channel{}); got != events.DefaultMaxAge {
		t.Fatalf("MaxAgeOf default = %v", got)
	}
	if got := events.MaxAgeOf(ev{"a.b"}, events.Channel{Policy: events.Policy{MaxAge: time.Minute}}); got != time.Minute {
		t.Fatalf("MaxAgeOf channel policy = %v", got)
	}
}
