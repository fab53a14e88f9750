package templates

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"maps"
	"strings"
	texttemplate "text/template"

	"github.com/heraldhq/herald/events"
)

//go:embed layout.html.tmpl
var defaultLayout string

// ErrNoTemplate is returned when an event has no template for a transport.
var ErrNoTemplate = errors.New("no template")

// Rendered is one message's content.
type Rendered struct {
	Subject string
	HTML    string
	Text    string
}

type eventTemplates struct {
	html map[string]*htmltemplate.Template // by variant ("" = default)
	text map[string]*texttemplate.Template
}

// Renderer renders registered events. It is safe for concurrent use.
type Renderer struct {
	layout *htmltemplate.Template
	events map[string]*eventTemplates
}

// Option configures a Renderer.
type Option func(*Renderer) error

// WithLayout replaces the default HTML layout. The layout sees .Subject and .Content.
func WithLayout(src string) Option {
	return func(r *Renderer) error {
		t, err := htmltemplate.New("layout").Option("missingkey=error").Parse(src)
		if err != nil {
			return fmt.Errorf("layout: %w", err)
		}
		r.layout = t
		return nil
	}
}

// New parses the templates of every registered event that has them (events.Templater). Files are
// "<transport>[.<variant>].html.tmpl" and "<transport>[.<variant>].text.tmpl"; an email event
// needs at least one of the two default files.
func New(reg *events.Registry, opts ...Option) (*Renderer, error) {
	r := &Renderer{events: map[string]*eventTemplates{}}
	if err := WithLayout(defaultLayout)(r); err != nil {
		return nil, err
	}
	for _, o := range opts {
		if err := o(r); err != nil {
			return nil, err
		}
	}
	for _, ev := range reg.Events() {
		t, ok := ev.(events.Templater)
		if !ok {
			continue
		}
		et, err := parse(t.Templates())
		if err != nil {
			return nil, fmt.Errorf("templates of event %q: %w", ev.ID(), err)
		}
		r.events[ev.ID()] = et
	}
	return r, nil
}

func parse(fsys fs.FS) (*eventTemplates, error) {
	et := &eventTemplates{html: map[string]*htmltemplate.Template{}, text: map[string]*texttemplate.Template{}}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".tmpl") {
			continue
		}
		src, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		base := strings.TrimSuffix(name, ".tmpl")
		switch {
		case strings.HasSuffix(base, ".html"):
			key := strings.TrimSuffix(base, ".html")
			t, err := htmltemplate.New(name).Option("missingkey=zero").Parse(string(src))
			if err != nil {
				return nil, err
			}
			et.html[key] = t
		case strings.HasSuffix(base, ".text"):
			key := strings.TrimSuffix(base, ".text")
			t, err := texttemplate.New(name).Option("missingkey=zero").Parse(string(src))
			if err != nil {
				return nil, err
			}
			et.text[key] = t
		}
	}
	return et, nil
}

// Has reports whether eventID has any template for transport.
func (r *Renderer) Has(eventID, transport string) bool {
	et := r.events[eventID]
	if et == nil {
		return false
	}
	return et.html[transport] != nil || et.text[transport] != nil
}

// Assigns builds what templates see: the hydrated data by reference name, the variables
// (secrets revealed), "recipient", "subject", "event_id", "dispatch_id", then the event's
// TemplateAssigns over them.
func Assigns(ctx context.Context, ev events.Event, d *events.Dispatch, ch events.Channel, rc events.Recipient, subject string) (map[string]any, error) {
	a := make(map[string]any, len(d.Data)+len(d.Vars)+4)
	maps.Copy(a, d.Data)
	for k, v := range d.Vars {
		if s, ok := v.(events.Secret); ok {
			v = s.Reveal()
		}
		a[k] = v
	}
	a["recipient"] = rc
	a["subject"] = subject
	a["event_id"] = d.EventID
	a["dispatch_id"] = d.ID
	if ta, ok := ev.(events.TemplateAssigner); ok {
		extra, err := ta.TemplateAssigns(ctx, d, ch, rc)
		if err != nil {
			return nil, fmt.Errorf("template assigns: %w", err)
		}
		maps.Copy(a, extra)
	}
	return a, nil
}

// Render renders ev's templates for transport (falling back from variant to the default),
// wrapping the HTML in the layout.
func (r *Renderer) Render(eventID, transport, variant, subject string, assigns map[string]any) (Rendered, error) {
	et := r.events[eventID]
	if et == nil {
		return Rendered{}, fmt.Errorf("event %q: %w", eventID, ErrNoTemplate)
	}
	out := Rendered{Subject: subject}
	ht := pick(et.html, transport, variant)
	tt := pick(et.text, transport, variant)
	if ht == nil && tt == nil {
		return Rendered{}, fmt.Errorf("event %q transport %q: %w", eventID, transport, ErrNoTemplate)
	}
	if ht != nil {
		var body bytes.Buffer
		if err := ht.Execute(&body, assigns); err != nil {
			return Rendered{}, fmt.Errorf("render %s html: %w", eventID, err)
		}
		var page bytes.Buffer
		if err := r.layout.Execute(&page, map[string]any{
			"Subject": subject,
			"Content": htmltemplate.HTML(body.String()), //nolint:gosec // produced by html/template above
		}); err != nil {
			return Rendered{}, fmt.Errorf("render %s layout: %w", eventID, err)
		}
		out.HTML = page.String()
	}
	if tt != nil {
		var body bytes.Buffer
		if err := tt.Execute(&body, assigns); err != nil {
			return Rendered{}, fmt.Errorf("render %s text: %w", eventID, err)
		}
		out.Text = body.String()
	}
	return out, nil
}

func pick[T any](m map[string]*T, transport, variant string) *T {
	if variant != "" {
		if t := m[transport+"."+variant]; t != nil {
			return t
		}
	}
	return m[transport]
}
