package ledger_test

import (
	"testing"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestEraseMatchesWholeAddressesOnly: an address is found as a whole address only, raw or
// escaped, never inside a longer one (abob@…, bob@….network), and the Go matcher (JSON strings,
// kept payloads) agrees with the SQL regular expression (text columns) on every case.
func TestEraseMatchesWholeAddressesOnly(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	cases := []struct {
		addr, text string
		want       bool
	}{
		{"bob@example.net", "bob@example.net", true},
		{"bob@example.net", "BOB@Example.NET", true},
		{"bob@example.net", "Bob <bob@example.net>, ann@example.org", true},
		{"bob@example.net", "mailto:bob@example.net", true},
		{"bob@example.net", "write to bob@example.net.", true},
		{"bob@example.net", "bob@example.net_", true},
		{"bob@example.net", "abob@example.net", false},
		{"bob@example.net", "a.bob@example.net", false},
		{"bob@example.net", "a_bob@example.net", false},
		{"bob@example.net", "a-bob@example.net", false},
		{"bob@example.net", "a+bob@example.net", false},
		{"bob@example.net", "a%bob@example.net", false},
		{"bob@example.net", "bob@example.network", false},
		{"bob@example.net", "bob@example.net.org", false},
		{"bob@example.net", "bob@example.net-x", false},
		{"bob@example.net", "abob@example.net and bob@example.network", false},
		{"bob@example.net", "abob@example.net and bob@example.net", true},
		{"bob@example.net", "https://x/u?email=bob%40example.net&x=1", true},
		{"bob@example.net", "https://x/u?email=bob%40example.network", false},
		{"bob@example.net", "https://x/u?email=a%2Bbob%40example.net", false},
		{"bob@example.net", "https://x/u?to=mailto%3Abob%40example.net", true},
		{"bob@example.net", "a&#43;bob@example.net", false},
		{"bob@example.net", "a&#x2B;bob@example.net", false},
		{"bob@example.net", "&#58;bob@example.net", true},
		{"bob@example.net", "&lt;bob@example.net&gt;", true},
		{"bob@example.net", "&#x7;bob@example.net", true},
		{"bob@example.net", "&#X3A;bob@example.net", true},
		{"bob@example.net", "&#0058;bob@example.net", true},
		{"bob@example.net", "&#64;bob@example.net", false},
		{"bob@example.net", "&#x40;bob@example.net", false},
		{"bob@example.net", "&#xfeff;bob@example.net", true}, // escaped non-ASCII: a boundary
		{"bob@example.net", "&#4b;bob@example.net", true},
		{"bob@example.net", "#43;bob@example.net", true},
		{"bob@example.net", "&#;bob@example.net", true},
		{"bob@example.net", "&#x;bob@example.net", true},
		{"bob@example.net", "box;bob@example.net", true},
		{"bob@example.net", "&ecirc;bob@example.net", true},
		{"bob@example.net", "x&#x2b;bob@example.net", false},
		{"bob@example.net", "%0Abob%40example.net", true},
		{"bob@example.net", "%C3%A9bob%40example.net", true}, // escaped non-ASCII: erring on erasing
		{"bob@example.net", "ébob@example.net", false},
		{"bob@example.net", "@bob@example.net", false},
		{"bob@example.net", "bob@example.net%2e", true},
		{"bob@example.net", "&#00000064;bob@example.net", false},
		{"bob@example.net", "&#000000064;bob@example.net", true},
		{"bob@example.net", "&#x0000040;bob@example.net", false},
		{"bob@example.net", "&#x00000040;bob@example.net", false},
		{"bob@example.net", "&#x000000040;bob@example.net", true},
		{"bob@example.net", "&#0000058;bob@example.net", true},
		{"bob@example.net", "&#00000005;bob@example.net", true},
		{"bob@example.net", "&#x0000005;bob@example.net", true},
		{"bob@example.net", "&#a43;bob@example.net", true},
		{"bob@example.net", "0123456789abcdef;bob@example.net", true},
		{"bob@example.net", "&#160;bob@example.net", true},
		{"bob@example.net", "&#8220;bob@example.net&#8221;", true},
		{"bob@example.net", "&#x201C;bob@example.net", true},
		{"bob@example.net", "%C2%A0bob%40example.net", true},
		{"bob@example.net", "\u00a0bob@example.net", true},
		{"bob@example.net", "\u201cbob@example.net\u201d", true},
		{"bob@example.net", `{"to":"Bob \u003cbob@example.net\u003e"`, true},
		{"bob@example.net", `{\"to\":\"Bob \\u003cbob@example.net\\u003e`, true},
		{"bob@example.net", `line one\nbob@example.net`, true},
		{"bob@example.net", `\u0061bob@example.net`, false},
		{"bob@example.net", `\u002bbob@example.net`, false},
		{"bob@example.net", `\u003Cbob@example.net`, true},
		{"bob@example.net", "&#128;bob@example.net", true},
		{"bob@example.net", "&#127;bob@example.net", true},
		{"bob@example.net", "&#12345678;bob@example.net", true},
		{"a+b@x.com", "a+b@x.com", true},
		{"a+b@x.com", "<a href=\"mailto:a&#43;b@x.com\">", true},
		{"a+b@x.com", "za&#43;b@x.com", false},
		{"a+b@x.com", "?email=A%2Bb%40x.com", true},
		{"a+b@x.com", "?email=za%2Bb%40x.com", false},
		{"a+b@x.com", "b@x.com", false},
	}
	for _, c := range cases {
		if got := ledger.MentionsAddress([]string{c.addr}, c.text); got != c.want {
			t.Errorf("Go: %q in %q = %v, want %v", c.addr, c.text, got, c.want)
		}
		var got bool
		if err := pool.QueryRow(t.Context(), `SELECT $1 ~* $2`, c.text, ledger.AddressPattern([]string{c.addr})).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("SQL: %q in %q = %v, want %v", c.addr, c.text, got, c.want)
		}
	}
	// Redaction keeps what is around the address, also between occurrences apart by one character.
	for _, c := range []struct{ text, want string }{
		{"To: Bob <BOB@example.net>; bob@example.net;bob@example.net,bob@example.net abob@example.net.",
			"To: Bob <[erased]>; [erased];[erased],[erased] abob@example.net."},
		{"&lt;bob@example.net&gt;&#58;bob@example.net a&#43;bob@example.net ?e=bob%40example.net&m=mailto%3Abob%40example.net",
			"&lt;[erased]&gt;&#58;[erased] a&#43;bob@example.net ?e=[erased]&m=mailto%3A[erased]"},
		{"bob@example.net", "[erased]"},
		{"bob@example.network x", "bob@example.network x"},
	} {
		got, err := ledger.RedactAddresses(t.Context(), pool, []string{"bob@example.net"}, c.text)
		if err != nil || got != c.want {
			t.Errorf("redacting %q = %q (%v), want %q", c.text, got, err, c.want)
		}
	}
}
