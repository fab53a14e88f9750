package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// isConnError reports whether err means "PostgreSQL cannot be reached right now", as opposed to
// "PostgreSQL refused this data". The class is narrow on purpose (DESIGN.md, "Waiting for
// PostgreSQL is not failing"): network errors, a refused or dropped connection, a timeout waiting
// for the server, and SQLSTATE 08xxx (connection exception), 57P0x (operator intervention:
// shutdown, crash recovery) and 53300 (too many connections). Everything else is a data error
// and is recorded, never retried forever.
func isConnError(err error) bool {
	if err == nil {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P0") || pe.Code == "53300"
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	switch {
	case errors.As(err, &ce), errors.As(err, &ne):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return true
	case pgconn.Timeout(err), errors.Is(err, context.DeadlineExceeded):
		return true
	}
	return strings.Contains(err.Error(), "conn closed") // pgconn's closed-connection errors carry no type
}

// unreachable reports whether err means PostgreSQL cannot be reached now. A timeout is
// ambiguous — a stalled server or network, or merely a slow statement — so the server is asked on
// a connection of its own: if it answers, the timeout was the statement's, which is not an outage
// (it must not be waited out forever).
func (w *Worker) unreachable(ctx context.Context, err error) bool {
	if !isConnError(err) {
		return false
	}
	if !pgconn.Timeout(err) && !errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	c, cerr := pgx.ConnectConfig(ctx, w.cfg.DB.Config().ConnConfig)
	if cerr != nil {
		return true
	}
	defer c.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	return c.Ping(ctx) != nil
}

// waitDBError returns a task to asynq while PostgreSQL is unreachable. It is not counted as a
// failure (asynq's retry count stays), so an outage of any length never uses up a dispatch's
// retries; it carries its own backoff.
type waitDBError struct {
	err   error
	delay time.Duration
}

func (e *waitDBError) Error() string {
	return fmt.Sprintf("waiting for PostgreSQL (retry in %v): %v", e.delay.Round(time.Millisecond), e.err)
}

func (e *waitDBError) Unwrap() error { return e.err }

// dbWaiters tracks the tasks this worker handed back to asynq to wait for PostgreSQL: their
// consecutive waits (for the backoff) and when they last waited (for the gauge).
type dbWaiters struct {
	mu    sync.Mutex
	tasks map[string]dbWait
}

type dbWait struct {
	n  int
	at time.Time
}

const (
	dbWaitMin = 500 * time.Millisecond
	dbWaitMax = 30 * time.Second
)

// wait records one more wait of task id and returns its delay: doubling from dbWaitMin to
// dbWaitMax, with jitter.
func (d *dbWaiters) wait(id string) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.tasks == nil {
		d.tasks = map[string]dbWait{}
	}
	w := d.tasks[id]
	w.n++
	w.at = time.Now()
	d.tasks[id] = w
	delay := dbWaitMin << min(w.n-1, 10)
	delay = min(delay, dbWaitMax)
	return delay/2 + rand.N(delay/2+1) //nolint:gosec // jitter, not security
}

// done forgets task id: it ran without waiting for PostgreSQL.
func (d *dbWaiters) done(id string) {
	d.mu.Lock()
	delete(d.tasks, id)
	d.mu.Unlock()
}

// count returns how many tasks wait for PostgreSQL now: those whose last wait is recent enough
// that their retry has not come yet. Entries of tasks another worker took over age out.
func (d *dbWaiters) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for id, w := range d.tasks {
		if time.Since(w.at) > 2*dbWaitMax {
			delete(d.tasks, id)
			continue
		}
		n++
	}
	return n
}
