package engine

import (
	"context"
	"encoding/json"
	"slices"
	"sync"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
)

func onlyInserted(due []ledger.DueTask, inserted []string) []ledger.DueTask {
	if len(due) == len(inserted) {
		return due
	}
	ok := make(map[string]bool, len(inserted))
	for _, id := range inserted {
		ok[id] = true
	}
	return slices.DeleteFunc(due, func(d ledger.DueTask) bool { return !ok[d.ID] })
}

// enqueueReceiptTasks hands deliver tasks to asynq for receipts already marked enqueued, a few
// at a time in parallel (asynq v0.26 has no batch enqueue). A failure is left to the promoter,
// which enqueues again after RequeueAfter.
func (w *Worker) enqueueReceiptTasks(ctx context.Context, due []ledger.DueTask) {
	const parallel = 8
	var wg sync.WaitGroup
	work := make(chan ledger.DueTask)
	for range min(parallel, len(due)) {
		wg.Go(func() {
			for r := range work {
				p, _ := json.Marshal(tasks.DeliverPayload{V: 1, ReceiptID: r.ID, Attempt: r.Attempt})
				if err := w.enqueue(ctx, tasks.TypeDeliver, tasks.DeliverTaskID(r.ID, r.Attempt), p, r.DueAt); err != nil {
					w.log.Warn().Err(err).Str("receipt_id", r.ID).Msg("enqueue failed; the promoter will retry")
				}
			}
		})
	}
	for _, r := range due {
		work <- r
	}
	close(work)
	wg.Wait()
}
