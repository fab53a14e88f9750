package testenv

import (
	"os"
	"testing"
)

func TestTargetAndVia(t *testing.T) {
	t.Setenv("PGHOST", "")
	t.Setenv("PGPORT", "")
	_ = os.Unsetenv("PGHOST")
	_ = os.Unsetenv("PGPORT")
	tests := []struct {
		url, target, via string
	}{
		{"postgres://u:secret@db.internal:6543/herald_t_1?sslmode=disable", "db.internal:6543",
			"postgres://u:secret@127.0.0.1:4000/herald_t_1?sslmode=disable"},
		{"postgres://postgres@127.0.0.1/postgres", "127.0.0.1:5432", "postgres://postgres@127.0.0.1:4000/postgres"},
		{"postgresql:///herald?host=db.internal&port=6000", "db.internal:6000", "postgresql://127.0.0.1:4000/herald"},
		{"redis://:pw@127.0.0.1:6380/3", "127.0.0.1:6380", "redis://:pw@127.0.0.1:4000/3"},
		{"smtp://127.0.0.1:2525?tls=none", "127.0.0.1:2525", "smtp://127.0.0.1:4000?tls=none"},
	}
	for _, tt := range tests {
		if got := Target(t, tt.url); got != tt.target {
			t.Errorf("Target(%s) = %s, want %s", tt.url, got, tt.target)
		}
		if got := Via(t, tt.url, "127.0.0.1:4000"); got != tt.via {
			t.Errorf("Via(%s) = %s, want %s", tt.url, got, tt.via)
		}
	}
}
