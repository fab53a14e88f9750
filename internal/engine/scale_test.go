//go:build !race

// The scale tests: built only without the race detector, whose slowdown (5-10x on the fan-out's
// hot loop) would turn a minute into ten. `make test` runs them in a second pass without -race.

package engine_test

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
)

// TestScaleMillionRecipientFanOut: a dispatch to 1,000,000 recipients fans out and commits with the
// defaults (chunks of 1000, 60s task timeout), with the worker's heap bounded while it does.
func TestScaleMillionRecipientFanOut(t *testing.T) {
	ev := crowd{n: 1_000_000, mints: &atomic.Int32{}, failed: &atomic.Bool{}}
	b := setup(t, withEvents(ev), withConfig(func(c *engine.Config) {
		c.Lease, c.TaskTimeout, c.SendTimeout = 2*time.Minute, 60*time.Second, 5*time.Second
	})).start()
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	})
	id, err := dispatchID(b.client.Dispatch(t.Context(), "test.crowd", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b.waitDispatch(id, ledger.DispatchFannedOut, 8*time.Minute)
	close(stop)
	wg.Wait()
	if n := b.countReceipts(id); n != ev.n {
		t.Fatalf("%d receipts for %d recipients", n, ev.n)
	}
	t.Logf("1,000,000 receipts committed in %v; peak heap in use %d MiB", time.Since(start).Round(time.Second), peak.Load()>>20)
	if p := peak.Load(); p > 512<<20 {
		t.Fatalf("peak heap in use %d MiB while fanning out: memory is not bounded", p>>20)
	}
}
