// Package cli holds what Herald's command-line programs share: running a kong parser inside a
// testable run function, and reading configuration from the environment or .herald/dev.env.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/alecthomas/kong"
	"github.com/hibiken/asynq"
	"github.com/joho/godotenv"
	"github.com/redis/go-redis/v9"
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
	rc, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil
	}
	defer func() { _ = rc.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rc.Ping(ctx).Err(); err != nil {
		addr := ""
		if o, ok := opt.(asynq.RedisClientOpt); ok {
			addr = " at " + o.Addr
		}
		return fmt.Errorf("Redis%s (HERALD_REDIS_URL) does not answer: %w", addr, err)
	}
	return nil
}

// Parse parses args into grammar. It returns done=true when kong already answered (--help) and
// the program should stop with err (nil for help).
func Parse(grammar any, name, desc string, args []string, stdout, stderr io.Writer, opts ...kong.Option) (kctx *kong.Context, done bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(exitCode)
			if !ok {
				panic(r)
			}
			done = true
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
		return nil, true, err
	}
	return kctx, false, nil
}

// Env returns a getenv that prefers the process environment and falls back to the KEY=value
// lines of file (written by `make run`), if it exists.
func Env(getenv func(string) string, file string) (func(string) string, error) {
	vals := map[string]string{}
	if file != "" {
		m, err := godotenv.Read(file)
		switch {
		case err == nil:
			vals = m
		case errors.Is(err, os.ErrNotExist):
		default:
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
	}
	return func(k string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return vals[k]
	}, nil
}
