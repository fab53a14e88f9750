package events

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Ref points at a row the worker hydrates at send time: Name = Resource/ID, as in
// "user=users/42". Payloads carry references, never rows.
type Ref struct {
	Name     string `json:"name"`
	Resource string `json:"resource"`
	ID       string `json:"id"`
}

func (r Ref) String() string { return r.Name + "=" + r.Resource + "/" + r.ID }

var refName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Validate checks the reference is complete and its name usable in templates.
func (r Ref) Validate() error {
	if !refName.MatchString(r.Name) {
		return fmt.Errorf("ref name %q: want a letter or _ followed by letters, digits or _", r.Name)
	}
	if !refName.MatchString(r.Resource) {
		return fmt.Errorf("ref %s: resource %q: want a letter or _ followed by letters, digits or _", r.Name, r.Resource)
	}
	if r.ID == "" || len(r.ID) > 200 {
		return fmt.Errorf("ref %s: id must be 1 to 200 characters", r.Name)
	}
	if strings.ContainsRune(r.ID, 0) || !utf8.ValidString(r.ID) {
		return fmt.Errorf("ref %s: id must be valid UTF-8 without NUL characters (PostgreSQL cannot store them)", r.Name)
	}
	return nil
}

// ParseRef parses "name=resource/id", such as "user=users/42".
func ParseRef(s string) (Ref, error) {
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return Ref{}, fmt.Errorf("ref %q: want name=resource/id, such as user=users/42", s)
	}
	res, id, ok := strings.Cut(rest, "/")
	if !ok {
		return Ref{}, fmt.Errorf("ref %q: want name=resource/id, such as user=users/42", s)
	}
	r := Ref{Name: name, Resource: res, ID: id}
	return r, r.Validate()
}

// Loader hydrates references of one resource. A missing row is ErrNotFound (wrapped or not).
// Loaders must be safe for concurrent use.
type Loader interface {
	Load(ctx context.Context, ref Ref) (any, error)
}

// LoaderFunc adapts a function to Loader.
type LoaderFunc func(ctx context.Context, ref Ref) (any, error)

// Load calls f.
func (f LoaderFunc) Load(ctx context.Context, ref Ref) (any, error) { return f(ctx, ref) }
