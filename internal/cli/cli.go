// Package cli holds what Herald's command-line programs share: running a kong parser inside a
// testable run function, and reading configuration from the environment or .herald/dev.env.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/alecthomas/kong"
	"github.com/hibiken/asynq"
	"github.com/joho/godotenv"
	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/internal/redisconn"
)

type exitCode int

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func init() {
	// go-redis logs every failed dial to standard error; the CLIs report one clear line instead.
	redis.SetLogger(quietRedis{})
}

// PingRedis checks that Redis answers, naming the variable to fix when it does not.
func PingRedis(ctx context.Context, opt asynq.RedisConnOpt) error {
	rc, err := redisconn.New(opt)
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	return redisconn.Ping(ctx, rc, opt)
}

// Help is a command that prints the usage, of the program or of one command, and succeeds.
// Add it to a grammar as
//
//	Help cli.Help `cmd:"" help:"Show this usage, or one command's: help COMMAND."`
//
// and Parse answers it like --help.
type Help struct {
	Command []string `arg:"" optional:"" help:"The command to describe, such as: receipts list."`
}

// Parse parses args into grammar. It returns done=true when Parse already answered and the
// program should stop with err: nil after --help or the Help command; an error after a usage
// error. A group of commands named without one of its commands (the program alone, or
// "receipts") prints the group's full usage on stderr and fails, since nothing was done.
func Parse(grammar any, name, desc string, args []string, stdout, stderr io.Writer, opts ...kong.Option) (kctx *kong.Context, done bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(exitCode)
			if !ok {
				panic(r)
			}
			kctx, done, err = nil, true, nil
			if code != 0 {
				err = fmt.Errorf("exit %d", code)
			}
		}
	}()
	opts = append([]kong.Option{
		kong.Name(name), kong.Description(desc), kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exitCode(code)) }),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	}, opts...)
	parser, err := kong.New(grammar, opts...)
	if err != nil {
		return nil, true, err
	}
	kctx, err = parser.Parse(args)
	if err != nil {
		var pe *kong.ParseError
		if errors.As(err, &pe) && pe.Context != nil && pe.Context.Error == nil {
			node := pe.Context.Selected()
			if node == nil {
				node = pe.Context.Model.Node
			}
			if hasCommands(node) { // a group without its command: show what it offers
				parser.Stdout = stderr
				_ = pe.Context.PrintUsage(false)
				where := ""
				if node.Type == kong.CommandNode {
					where = strings.TrimSpace(node.Path()) + ": "
				}
				return nil, true, fmt.Errorf("%sno command given: choose one of the commands listed above", where)
			}
		}
		return nil, true, err
	}
	if sel := kctx.Selected(); sel != nil {
		if h, ok := sel.Target.Addr().Interface().(*Help); ok {
			_, err := parser.Parse(append(slices.Clone(h.Command), "--help")) // answers through kong.Exit
			return nil, true, err
		}
	}
	return kctx, false, nil
}

func hasCommands(n *kong.Node) bool {
	for _, c := range n.Children {
		if c.Type == kong.CommandNode && !c.Hidden {
			return true
		}
	}
	return false
}

// DevEnvFile is where `make run` writes its settings, relative to the repository root.
const DevEnvFile = ".herald/dev.env"

// FindDevEnv looks for DevEnvFile in each of dirs and in their parents, up to the repository
// root (the first folder that holds go.mod or .git), and returns the first one it finds, or ""
// when there is none. Empty dirs are skipped.
func FindDevEnv(dirs ...string) string {
	for _, dir := range dirs {
		if dir == "" {
			continue
		}
		dir, err := filepath.Abs(dir)
		if err != nil {
			continue
		}
		for {
			f := filepath.Join(dir, DevEnvFile)
			if st, err := os.Stat(f); err == nil && st.Mode().IsRegular() {
				return f
			}
			if exists(filepath.Join(dir, "go.mod")) || exists(filepath.Join(dir, ".git")) {
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return ""
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// Env returns a getenv that prefers the process environment and falls back to the KEY=value
// lines of file (written by `make run`). file "" means none; a file that cannot be read is an
// error.
func Env(getenv func(string) string, file string) (func(string) string, error) {
	vals := map[string]string{}
	if file != "" {
		m, err := godotenv.Read(file)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("settings file %s does not exist", file)
		}
		if err != nil {
			return nil, fmt.Errorf("read settings file %s: %w", file, err)
		}
		vals = m
	}
	return func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return vals[k]
	}, nil
}
