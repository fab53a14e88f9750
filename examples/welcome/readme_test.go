package welcome_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	readme       = "../../README.md"
	sectionStart = "## Writing an event and running your own worker\n"
	sectionEnd   = "\n## Configuration\n"
)

// quotes are what the README's section shows verbatim: whole files of this program, or one
// declaration (with its doc comment) of another file.
var quotes = []struct{ file, decl string }{
	{"welcome.go", ""},
	{"templates/email.html.tmpl", ""},
	{"templates/email.text.tmpl", ""},
	{"templates/email.tips.html.tmpl", ""},
	{"templates/email.tips.text.tmpl", ""},
	{"../../events/ref.go", "Loader"},
	{"users.go", ""},
	{"cmd/welcome-worker/main.go", ""},
	{"cmd/welcome-producer/main.go", ""},
	{"../../example_test.go", "ExampleClient_DispatchTx"},
	{"../../example_test.go", "ExampleMount"},
	{"../../example_test.go", "ExampleAdmin"},
}

// TestReadmeQuotesTheProgram: each quote is one fenced block of the README's section, byte for
// byte, and every Go block of the section is a quote, so the README shows only code that
// compiles and is tested, and cannot drift from it.
func TestReadmeQuotesTheProgram(t *testing.T) {
	blocks := fencedBlocks(t, readmeSection(t))
	var quoted []string
	for _, q := range quotes {
		want := quote(t, q.file, q.decl)
		quoted = append(quoted, want)
		if !slices.ContainsFunc(blocks, func(b block) bool { return b.body == want }) {
			name := q.file
			if q.decl != "" {
				name += " (" + q.decl + ")"
			}
			t.Errorf("README.md, %q: no fenced block quotes %s verbatim; paste it again:\n%s",
				strings.TrimSpace(sectionStart), name, want)
		}
	}
	for _, b := range blocks {
		if b.lang == "go" && !slices.Contains(quoted, b.body) {
			t.Errorf("README.md, %q: this Go block is not quoted from a compiled file; "+
				"put the code in examples/welcome (or an Example) and add it to quotes:\n%s",
				strings.TrimSpace(sectionStart), b.body)
		}
	}
}

func readmeSection(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, sectionStart)
	if i < 0 {
		t.Fatalf("README.md has no section %q", strings.TrimSpace(sectionStart))
	}
	s = s[i:]
	j := strings.Index(s, sectionEnd)
	if j < 0 {
		t.Fatalf("README.md: no %q after %q", strings.TrimSpace(sectionEnd), strings.TrimSpace(sectionStart))
	}
	return s[:j]
}

type block struct{ lang, body string }

// fencedBlocks returns the ``` blocks of s, each body ending in a newline as files do.
func fencedBlocks(t *testing.T, s string) []block {
	t.Helper()
	var (
		blocks []block
		cur    *block
	)
	for line := range strings.Lines(s) {
		fence := strings.HasPrefix(line, "```")
		switch {
		case fence && cur == nil:
			cur = &block{lang: strings.TrimSpace(strings.TrimPrefix(line, "```"))}
		case fence:
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.body += line
		}
	}
	if cur != nil {
		t.Fatalf("README.md: a ```%s block is not closed", cur.lang)
	}
	return blocks
}

// quote returns file, or its top-level declaration decl with its doc comment.
func quote(t *testing.T, file, decl string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.FromSlash(file))
	if err != nil {
		t.Fatal(err)
	}
	if decl == "" {
		return string(src)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, file, src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range f.Decls {
		var doc *ast.CommentGroup
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Name.Name != decl {
				continue
			}
			doc = d.Doc
		case *ast.GenDecl:
			if !slices.ContainsFunc(d.Specs, func(s ast.Spec) bool {
				ts, ok := s.(*ast.TypeSpec)
				return ok && ts.Name.Name == decl
			}) {
				continue
			}
			doc = d.Doc
		default:
			continue
		}
		start := d.Pos()
		if doc != nil {
			start = doc.Pos()
		}
		return string(src[fset.Position(start).Offset:fset.Position(d.End()).Offset]) + "\n"
	}
	t.Fatalf("%s declares no %s", file, decl)
	return ""
}
