package testenv

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DumpHerald renders every row of every table of the herald schema as text, one line per row
// prefixed by its table: columns are listed from information_schema, so a table added later is
// covered without touching the tests that grep it (the erasure canaries). bytea is rendered with encode(…, 'escape'), jsonb as text.
func DumpHerald(t testing.TB, pool *pgxpool.Pool) []string {
	t.Helper()
	ctx := t.Context()
	rows, err := pool.Query(ctx, `SELECT c.table_name, string_agg(
		    CASE WHEN c.data_type = 'bytea' THEN format('COALESCE(encode(%I, ''escape''), '''')', c.column_name)
		         ELSE format('COALESCE(%I::text, '''')', c.column_name) END, ', ' ORDER BY c.ordinal_position)
		FROM information_schema.columns c JOIN information_schema.tables tb USING (table_schema, table_name)
		WHERE c.table_schema = 'herald' AND tb.table_type = 'BASE TABLE' GROUP BY c.table_name ORDER BY c.table_name`)
	if err != nil {
		t.Fatal(err)
	}
	type table struct{ name, cols string }
	var tables []table
	for rows.Next() {
		var tb table
		if err := rows.Scan(&tb.name, &tb.cols); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, tb)
	}
	if rows.Err() != nil || len(tables) < 5 {
		t.Fatalf("herald tables: %v %v", tables, rows.Err())
	}
	var out []string
	for _, tb := range tables {
		rows, err := pool.Query(ctx, fmt.Sprintf(`SELECT concat_ws(' | ', %s) FROM herald.%q`, tb.cols, tb.name))
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				t.Fatal(err)
			}
			out = append(out, tb.name+": "+line)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}
