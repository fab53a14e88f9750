// Package redisconn is the one place Herald opens a go-redis client on asynq's connection
// settings and checks that Redis answers.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// New opens a go-redis client on opt (a RedisClientOpt, a failover or a cluster option). The
// caller closes it: an open client keeps background goroutines.
func New(opt asynq.RedisConnOpt) (redis.UniversalClient, error) {
	rc, ok := opt.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, errors.New("the Redis connection settings do not make a go-redis client")
	}
	return rc, nil
}

// Ping checks within 5 s that Redis answers, naming the variable to fix when it does not.
func Ping(ctx context.Context, rc redis.UniversalClient, opt asynq.RedisConnOpt) error {
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
