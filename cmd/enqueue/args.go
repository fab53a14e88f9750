package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/ledger"
)

// states lists kind's states for help texts.
func states(kind ledger.Kind) string {
	var out []string
	for _, s := range ledger.States(kind) {
		out = append(out, string(s))
	}
	return strings.Join(out, ", ")
}

// parseStatus checks a --status value against kind's states.
func parseStatus(kind ledger.Kind, s string) (ledger.Status, error) {
	if s == "" || slices.Contains(ledger.States(kind), ledger.Status(s)) {
		return ledger.Status(s), nil
	}
	return "", fmt.Errorf("--status %q: not a %s state; want one of %s", s, kind, states(kind))
}

// parseLimit checks a --limit value.
func parseLimit(n int) (int, error) {
	if n < 1 || n > ledger.MaxListLimit {
		return 0, fmt.Errorf("--limit %d: want 1 to %d", n, ledger.MaxListLimit)
	}
	return n, nil
}

// parseID returns a dispatch or receipt id in canonical form, refusing anything that is not a
// UUID before PostgreSQL sees it.
func parseID(what, id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return "", fmt.Errorf("%q is not a valid id: a %s id is a UUID, such as 01a2203a-c569-7ae3-b0c8-f27792223ad5", id, what)
	}
	return u.String(), nil
}
