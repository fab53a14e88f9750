package archtest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// exported lists the exported top-level names of the package in dir (test files excluded).
func exported(t *testing.T, dir string) []string {
	t.Helper()
	fset := token.NewFileSet()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Name.IsExported() {
					name := d.Name.Name
					if d.Recv != nil {
						continue // methods follow their type
					}
					names = append(names, name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							names = append(names, s.Name.Name)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								names = append(names, n.Name)
							}
						}
					}
				}
			}
		}
	}
	slices.Sort(names)
	return names
}

func moduleRoot(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// TestPublicAPIsHoldNoEngine: tasks exports task names, payloads and the handler interface, and
// receipts the reading half; neither hands out the engine (workers, clients, the claim and fence
// store, test hooks). A new export must be added here on purpose.
func TestPublicAPIsHoldNoEngine(t *testing.T) {
	t.Parallel()
	for dir, allowed := range map[string][]string{
		"tasks": {"DecodeDeliver", "DecodeDispatch", "DeliverPayload", "DeliverTaskID", "DispatchPayload", "DispatchTaskID",
			"ErrMalformedPayload", "Handlers", "MaxPayloadBytes", "NewServeMux", "NewerPayloadError", "PayloadVersion",
			"TypeDeliver", "TypeDispatch"},
		"receipts": {"DefaultListLimit", "DispatchAccepted", "DispatchCanceled", "DispatchDuplicate", "DispatchFailed",
			"DispatchFannedOut", "DispatchFanningOut", "DispatchFilter", "DispatchRejected", "DispatchRetrying", "DispatchRow",
			"ErrNotFound", "Final", "Kind", "KindDispatch", "KindReceipt", "MaxListLimit", "Migrate", "MigrateFS", "Migrations",
			"NewReader", "Querier", "Reader", "ReceiptCanceled", "ReceiptExpired", "ReceiptFailed", "ReceiptFilter", "ReceiptRetrying",
			"ReceiptRow", "ReceiptScheduled", "ReceiptSending", "ReceiptSent", "ReceiptSkipped", "Recipient", "SchemaVersion",
			"States", "Status"},
	} {
		got := exported(t, filepath.Join(moduleRoot(t), dir))
		if len(got) < 5 {
			t.Fatalf("%s: found %d exported names; the test is not reading the package", dir, len(got))
		}
		for _, n := range got {
			if !slices.Contains(allowed, n) {
				t.Errorf("%s exports %s: only what users need belongs there (the engine is internal/engine, its SQL internal/ledger)", dir, n)
			}
		}
	}
}
