package engine

import (
	"context"
	"time"
)

// RunMaintenance runs the promoter and the sweeper until ctx is done: a promoter pass every
// PromoterInterval (or when DispatchTx's NOTIFY wakes it), a sweep every SweepInterval.
func (w *Worker) RunMaintenance(ctx context.Context) {
	t := time.NewTicker(w.cfg.PromoterInterval)
	defer t.Stop()
	wake := make(chan struct{}, 1)
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		w.promoter.listen(ctx, wake)
	}()
	defer func() { <-listening }()
	var lastSweep time.Time
	for {
		w.promoter.pass(ctx)
		if time.Since(lastSweep) >= w.cfg.SweepInterval {
			w.sweeper.sweep(ctx)
			lastSweep = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
	}
}

// Promote runs one promoter pass and returns how many tasks it enqueued.
func (w *Worker) Promote(ctx context.Context) int { return w.promoter.pass(ctx) }

// Sweep runs one sweep.
func (w *Worker) Sweep(ctx context.Context) { w.sweeper.sweep(ctx) }
