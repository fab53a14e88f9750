package engine_test

import (
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/heraldhq/herald/internal/engine"
)

// BenchmarkDispatchToSent measures the whole path on real services: Client.Dispatch → Redis →
// fan-out (hydrate, mint and seal a token) → inline delivery over SMTP to an in-process server →
// receipt sent. It reports deliveries per second and the dispatch-to-sent latency percentiles.
func BenchmarkDispatchToSent(b *testing.B) {
	for _, conc := range []int{4, 10} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			benchDispatch(b, conc)
		})
	}
}

func benchDispatch(b *testing.B, conc int) {
	bd := setup(b, withConfig(func(c *engine.Config) {
		c.Concurrency = conc
		l := zerolog.New(io.Discard).Level(zerolog.InfoLevel) // a real worker logs every send
		c.Logger = &l
	}))
	bd.start()
	ctx := b.Context()
	ids := make([]string, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		id, err := dispatchID(bd.client.Dispatch(ctx, "accounts.password_reset", user("42"), nil))
		if err != nil {
			b.Fatal(err)
		}
		ids = append(ids, id)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var n int
		if err := bd.pool.QueryRow(ctx, `SELECT count(*) FROM herald.receipts WHERE status = 'sent'`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n >= len(ids) {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d sent after 5 minutes", n, len(ids))
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	var p50, p99 float64
	if err := bd.pool.QueryRow(ctx, `SELECT
		percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM r.sent_at - d.accepted_at)),
		percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM r.sent_at - d.accepted_at))
		FROM herald.receipts r JOIN herald.dispatches d ON d.id = r.dispatch_id`).Scan(&p50, &p99); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(ids))/elapsed.Seconds(), "sent/s")
	b.ReportMetric(p50*1000, "p50-ms")
	b.ReportMetric(p99*1000, "p99-ms")
}

// BenchmarkDispatchLatency measures one dispatch at a time, from Client.Dispatch to the email
// arriving at the SMTP server: the pickup, fan-out and inline delivery of an idle worker.
func BenchmarkDispatchLatency(b *testing.B) {
	benchLatency(b, func(bd *bundle) error {
		_, err := dispatchID(bd.client.Dispatch(b.Context(), "accounts.password_reset", user("42"), nil))
		return err
	})
}

// BenchmarkDispatchTxLatency measures the outbox path, one dispatch at a time: DispatchTx and
// commit → NOTIFY wakes the promoter → fan-out → inline delivery → the email arrives.
func BenchmarkDispatchTxLatency(b *testing.B) {
	benchLatency(b, func(bd *bundle) error {
		ctx := b.Context()
		return pgx.BeginFunc(ctx, bd.pool, func(tx pgx.Tx) error {
			_, err := bd.client.DispatchTx(ctx, tx, "accounts.password_reset", user("42"), nil)
			return err
		})
	})
}

// benchLatency runs dispatch b.N times, each time waiting for its email, and reports the
// latency percentiles.
func benchLatency(b *testing.B, dispatch func(*bundle) error) {
	bd := setup(b, withConfig(func(c *engine.Config) {
		l := zerolog.New(io.Discard).Level(zerolog.InfoLevel) // a real worker logs every send
		c.Logger = &l
	}))
	bd.start()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := dispatch(bd); err != nil {
			b.Fatal(err)
		}
		bd.smtp.WaitFor(b, i+1, 30*time.Second)
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
