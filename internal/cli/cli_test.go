package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindDevEnv(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	mk := func(path, body string) {
		t.Helper()
		p := filepath.Join(tmp, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if body != "" {
			if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("repo/go.mod", "module x\n")
	mk("repo/.herald/dev.env", "A=1\n")
	mk("repo/cmd/enqueue/x", "")
	mk("repo/bin/x", "")
	mk("bare/go.mod", "module y\n") // a repository without a dev.env
	mk("bare/sub/x", "")
	mk("outer/.herald/dev.env", "A=2\n") // above bare's root: never reached from inside bare
	mk("outer/bare/go.mod", "module z\n")
	mk("outer/bare/sub/x", "")
	want := filepath.Join(tmp, "repo/.herald/dev.env")
	for _, tc := range []struct {
		name string
		dirs []string
		want string
	}{
		{"the root", []string{"repo"}, want},
		{"a subfolder", []string{"repo/cmd/enqueue"}, want},
		{"the binary's folder when the working folder has none", []string{"bare/sub", "repo/bin"}, want},
		{"stops at the repository root", []string{"outer/bare/sub"}, ""},
		{"empty dirs are skipped", []string{"", "repo/bin"}, want},
		{"nothing", nil, ""},
	} {
		var dirs []string
		for _, d := range tc.dirs {
			if d != "" {
				d = filepath.Join(tmp, d)
			}
			dirs = append(dirs, d)
		}
		if got := FindDevEnv(dirs...); got != tc.want {
			t.Errorf("%s: FindDevEnv(%v) = %q, want %q", tc.name, tc.dirs, got, tc.want)
		}
	}
}

func TestEnv(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "dev.env")
	if err := os.WriteFile(f, []byte("A=from-file\nB=from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	get, err := Env(func(k string) string { return map[string]string{"A": "from-env"}[k] }, f)
	if err != nil || get("A") != "from-env" || get("B") != "from-file" || get("C") != "" {
		t.Fatalf("Env: %v A=%q B=%q", err, get("A"), get("B"))
	}
	if _, err := Env(func(string) string { return "" }, f+".missing"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing file: err = %v", err)
	}
	if get, err := Env(func(string) string { return "" }, ""); err != nil || get("A") != "" {
		t.Errorf("no file: %v", err)
	}
}

type grammar struct {
	Flag  string   `help:"A flag." default:"x"`
	One   struct{} `cmd:"" help:"The first command."`
	Group struct {
		Two   struct{} `cmd:"" help:"The second command."`
		Three struct {
			List []string `sep:"none" help:"Never split."`
		} `cmd:"" help:"The third command."`
	} `cmd:"" help:"A group."`
	Help Help `cmd:"" help:"Show the usage."`
}

func TestParse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args             []string
		wantDone, failed bool
		wantOut, wantErr string // substrings of stdout and stderr
		wantCmd, wantMsg string
	}{
		{args: nil, wantDone: true, failed: true, wantErr: "  group three"},
		{args: []string{"--flag", "y"}, wantDone: true, failed: true, wantErr: "  group two"},
		{args: []string{"group"}, wantDone: true, failed: true, wantErr: "  group three", wantMsg: "group: no command given"},
		{args: []string{"help"}, wantDone: true, wantOut: "  group three"},
		{args: []string{"--help"}, wantDone: true, wantOut: "  group three"},
		{args: []string{"help", "group", "three"}, wantDone: true, wantOut: "--list=LIST    Never split."},
		{args: []string{"help", "nope"}, wantDone: true, failed: true},
		{args: []string{"one"}, wantCmd: "one"},
		{args: []string{"group", "three", "--list", "a,b"}, wantCmd: "group three"},
	} {
		var g grammar
		var out, errOut bytes.Buffer
		kctx, done, err := Parse(&g, "prog", "A program.", tc.args, &out, &errOut)
		if done != tc.wantDone || (err != nil) != tc.failed {
			t.Errorf("%v: done %v err %v; want done %v, failure %v", tc.args, done, err, tc.wantDone, tc.failed)
			continue
		}
		if err != nil && !strings.HasPrefix(err.Error(), tc.wantMsg) {
			t.Errorf("%v: err %q, want %q first", tc.args, err, tc.wantMsg)
		}
		if err != nil && strings.HasPrefix(err.Error(), "exit") {
			t.Errorf("%v: err %q says nothing", tc.args, err)
		}
		if !strings.Contains(out.String(), tc.wantOut) || !strings.Contains(errOut.String(), tc.wantErr) {
			t.Errorf("%v: stdout %q, stderr %q; want %q, %q", tc.args, out.String(), errOut.String(), tc.wantOut, tc.wantErr)
		}
		if tc.wantCmd != "" && (kctx == nil || kctx.Command() != tc.wantCmd && !strings.HasPrefix(kctx.Command(), tc.wantCmd)) {
			t.Errorf("%v: command %v, want %q", tc.args, kctx, tc.wantCmd)
		}
	}
	var g grammar
	if _, _, err := Parse(&g, "prog", "", []string{"group", "three", "--list", "a,b", "--list", "c"}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil ||
		len(g.Group.Three.List) != 2 || g.Group.Three.List[0] != "a,b" {
		t.Errorf("sep:none: %v %q", err, g.Group.Three.List)
	}
}
