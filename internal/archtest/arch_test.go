package archtest

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/heraldhq/herald"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Standard   bool
}

func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	pkgs := map[string]pkg{}
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p
	}
	return pkgs
}

// testOnly reports whether path is a package for tests only: the test environment, the fault
// proxy, and the transport test kits.
func testOnly(path string) bool {
	for _, p := range []string{"/internal/testenv", "/internal/faultproxy", "/channels/channeltest", "/channels/email/emailtest",
		"/internal/ledger/ledgertest"} {
		if path == mod+p {
			return true
		}
	}
	return false
}

func isStd(path string) bool { return !strings.Contains(strings.Split(path, "/")[0], ".") }

// TestDependencyDirection enforces DESIGN.md's rules: events imports the standard library
// only; templates imports events; channels never imports asynq; receipts imports neither
// asynq nor transports; tasks is the only public package below the root importing asynq.
func TestDependencyDirection(t *testing.T) {
	pkgs := listPackages(t)
	if len(pkgs) < 8 {
		t.Fatalf("go list found %d packages; the test is not looking at the module", len(pkgs))
	}
	for path, p := range pkgs {
		rel := strings.TrimPrefix(strings.TrimPrefix(path, mod), "/")
		for _, imp := range p.Imports {
			switch {
			case rel == "events" && !isStd(imp):
				t.Errorf("events imports %s; it may import the standard library only", imp)
			case rel == "templates" && !isStd(imp) && imp != mod+"/events":
				t.Errorf("templates imports %s; it may import events and the standard library only", imp)
			case rel == "receipts" && (strings.HasPrefix(imp, mod+"/channels") || strings.HasPrefix(imp, mod+"/tasks")):
				t.Errorf("receipts imports %s", imp)
			case imp == mod+"/internal/engine" && !strings.HasPrefix(rel, "cmd/") && rel != "":
				t.Errorf("%s imports the engine; only the root package and cmd/ may (the engine imports the others)", path)
			case !strings.HasPrefix(rel, "cmd/") && strings.HasPrefix(imp, mod+"/cmd"):
				t.Errorf("%s imports a command (%s)", path, imp)
			case testOnly(imp) && !testOnly(path):
				t.Errorf("%s imports the test-only package %s (production code never does)", path, imp)
			}
		}
		usesAsynq := false
		for _, d := range p.Deps {
			if d == "github.com/hibiken/asynq" {
				usesAsynq = true
			}
		}
		if !usesAsynq {
			continue
		}
		switch {
		case rel == "", rel == "tasks", strings.HasPrefix(rel, "cmd/"), strings.HasPrefix(rel, "internal/"),
			strings.HasPrefix(rel, "examples/") && strings.Contains(rel, "/cmd/"): // programs built on herald
		default:
			t.Errorf("%s depends on asynq; only tasks, the root package, cmd/ and internal/ may", path)
		}
	}
}
