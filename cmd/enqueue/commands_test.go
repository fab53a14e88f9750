package main

import (
	"context"
	"strconv"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/ledger"
)

// TestEveryCommandRuns checks that each command of the grammar has the Run method run calls
// through kong: a command without one would parse, then fail with "no Run() method found".
func TestEveryCommandRuns(t *testing.T) {
	t.Parallel()
	parser, err := kong.New(&root{}, kong.Vars{
		"dispatch_states": states(ledger.KindDispatch), "receipt_states": states(ledger.KindReceipt),
		"max_limit": strconv.Itoa(ledger.MaxListLimit),
	})
	if err != nil {
		t.Fatal(err)
	}
	type runner interface {
		Run(context.Context, *env) error
	}
	leaves := 0
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		if n.Type == kong.CommandNode && len(n.Children) == 0 {
			if _, help := n.Target.Addr().Interface().(*cli.Help); !help {
				leaves++
				if _, ok := n.Target.Addr().Interface().(runner); !ok {
					t.Errorf("command %q (%s) has no Run(context.Context, *env) error method", n.Path(), n.Target.Type())
				}
			}
		}
		for _, c := range n.Children {
			walk(c)
		}
	}
	walk(parser.Model.Node)
	if leaves < 12 {
		t.Errorf("found %d commands, want at least the 12 of enqueue --help", leaves)
	}
}
