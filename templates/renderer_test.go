package templates_test

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/templates"
)

type tev struct {
	id  string
	fsy fs.FS
}

func (e tev) ID() string                                                         { return e.id }
func (e tev) Templates() fs.FS                                                   { return e.fsy }
func (tev) Channels(context.Context, *events.Dispatch) ([]events.Channel, error) { return nil, nil }
func (tev) Recipients(context.Context, *events.Dispatch, events.Channel) ([]events.Recipient, error) {
	return nil, nil
}

func newRenderer(t *testing.T, files fstest.MapFS) (*templates.Renderer, error) {
	t.Helper()
	reg := events.NewRegistry()
	if err := reg.Register(tev{"a.b", files}); err != nil {
		t.Fatal(err)
	}
	return templates.New(reg)
}

func TestRenderEscapesHTMLAndWrapsLayout(t *testing.T) {
	t.Parallel()
	r, err := newRenderer(t, fstest.MapFS{
		"email.html.tmpl":     {Data: []byte(`<p>Hi {{.name}}</p><a href="{{.url}}">go</a>`)},
		"email.text.tmpl":     {Data: []byte(`Hi {{.name}} {{.url}}`)},
		"email.vip.html.tmpl": {Data: []byte(`<p>VIP {{.name}}</p>`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	a := map[string]any{"name": `<script>alert(1)</script>`, "url": "https://x.test/r?t=a&b=c"}
	out, err := r.Render("a.b", "email", "", "Subject <1>", a)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.HTML, "<script>") || !strings.Contains(out.HTML, "&lt;script&gt;") {
		t.Errorf("html not escaped: %s", out.HTML)
	}
	if !strings.Contains(out.HTML, "<title>Subject &lt;1&gt;</title>") {
		t.Errorf("layout did not receive the subject: %s", out.HTML)
	}
	if !strings.Contains(out.Text, "<script>") || !strings.Contains(out.Text, "t=a&b=c") {
		t.Errorf("text should be verbatim: %q", out.Text)
	}
	vip, err := r.Render("a.b", "email", "vip", "s", a)
	if err != nil || !strings.Contains(vip.HTML, "VIP") || !strings.Contains(vip.Text, "Hi ") {
		t.Errorf("variant with text fallback: %+v %v", vip, err)
	}
	if _, err := r.Render("a.b", "sms", "", "s", a); !errors.Is(err, templates.ErrNoTemplate) {
		t.Errorf("missing transport: %v", err)
	}
}

func TestTemplateErrorIsRegistrationError(t *testing.T) {
	t.Parallel()
	_, err := newRenderer(t, fstest.MapFS{"email.html.tmpl": {Data: []byte(`{{.name`)}})
	if err == nil || !strings.Contains(err.Error(), `"a.b"`) {
		t.Fatalf("want a parse error naming the event, got %v", err)
	}
}
