package engine

import (
	"context"
	"errors"
	"time"

	"github.com/heraldhq/herald/internal/ledger"
)

// recordRetry is the pause between tries of a final update while PostgreSQL is unreachable.
const recordRetry = 250 * time.Millisecond

// record runs a final update — an outcome that already happened — under
// context.WithoutCancel, each try with its own short deadline. While PostgreSQL is unreachable it
// tries again every recordRetry for as long as the process lives: a lost final update would mean
// a reclaim and a duplicate (DESIGN.md, invariant 8). Any other error — a refused value, or a
// statement slower than the per-try deadline while the server answers — is tried a few times,
// then returned, so that nothing spins forever.
func (w *Worker) record(ctx context.Context, update func(context.Context) error) error {
	base := context.WithoutCancel(ctx)
	var err error
	started, warned, other := time.Now(), time.Time{}, 0
	for {
		uctx, cancel := context.WithTimeout(base, 5*time.Second)
		err = update(uctx)
		cancel()
		if err == nil || errors.Is(err, ledger.ErrTransition) {
			if !warned.IsZero() {
				w.log.Info().Dur("waited", time.Since(started)).Msg("PostgreSQL answers again; the held outcome is recorded")
			}
			return err
		}
		if !w.unreachable(base, err) {
			if other++; other >= 5 {
				return err
			}
		} else if time.Since(warned) > 10*time.Second {
			warned = time.Now()
			w.log.Warn().Err(err).Dur("waited", time.Since(started)).
				Msg("PostgreSQL is unreachable: holding an outcome in memory until it answers (do not kill this worker)")
		}
		time.Sleep(recordRetry)
	}
}
