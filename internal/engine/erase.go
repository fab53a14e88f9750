package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
)

// QueuedErasure is what EraseQueued did in Redis.
type QueuedErasure struct {
	// Deleted is how many herald:dispatch tasks naming the person were deleted from the queue,
	// each after its dispatch was canceled.
	Deleted int64
	// Active is how many such tasks a worker was running: they cannot be deleted. Their
	// dispatches were canceled (a worker's first sight respects that); erase again once they
	// have finished, to redact the row the worker wrote.
	Active int64
}

// erasePageSize is how many tasks one listing reads.
const erasePageSize = 500

// EraseQueued removes from Redis the herald:dispatch tasks of queue whose payload holds one of
// addresses, found as EraseRecipient finds them (ledger.AddressMatcher: any letter case, URL-
// and HTML-escaped forms, whole addresses only: a partial one, "@example.net", finds nobody's
// longer address). A dispatch not yet seen by a
// worker carries its variables there, and asynq keeps retried and archived payloads for months. Each such task's dispatch is
// canceled first, as `enqueue cancel` does — a tombstone when PostgreSQL does not know it yet,
// which the worker's first sight respects — so nothing is dropped without a record; then the
// task is deleted. Run it before ledger.Store.EraseRecipient (which takes the addresses from
// ledger.Store.RecipientAddresses), and pass its counts there for the audit row.
//
// It reads every task of the queue (pending, scheduled, retry, active, archived): an erasure is
// rare, and no index of Redis finds text inside payloads. Deliver tasks are not read: they
// carry a receipt id and an attempt only. Only queue is looked at; a fleet with several queues
// runs it for each.
func EraseQueued(ctx context.Context, redis asynq.RedisConnOpt, store *ledger.Store, queue string, addresses []string) (QueuedErasure, error) {
	var out QueuedErasure
	match, err := ledger.NewAddressMatcher(addresses)
	if err != nil {
		return out, fmt.Errorf("erase queued tasks: %w", err)
	}
	if match.Empty() {
		return out, nil
	}
	insp := asynq.NewInspector(redis)
	defer func() { _ = insp.Close() }()
	found, err := findQueued(ctx, insp, queue, match)
	if err != nil {
		return out, err
	}
	for _, task := range found {
		if err := cancelQueued(ctx, store, queue, task); err != nil {
			return out, err
		}
		if task.State == asynq.TaskStateActive {
			out.Active++
			continue
		}
		err := insp.DeleteTask(queue, task.ID)
		switch {
		case err == nil, errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			out.Deleted++ // or gone meanwhile: a worker took it, and met the cancel
			// No task will meet the tombstone now: count its retention from here (else kept forever).
			if id := queuedDispatchID(task); id != "" {
				if err := store.MeetTombstone(ctx, id); err != nil {
					return out, err
				}
			}
		case isActive(insp, queue, task.ID): // it became active between the listing and the delete
			out.Active++
		default:
			return out, fmt.Errorf("delete queued task %s: %w", task.ID, err)
		}
	}
	return out, nil
}

// isActive reports whether a worker is running the task now.
func isActive(insp *asynq.Inspector, queue, id string) bool {
	info, err := insp.GetTaskInfo(queue, id)
	return err == nil && info.State == asynq.TaskStateActive
}

// findQueued lists the dispatch tasks of queue whose payload holds an address. States are read in
// the order tasks move through them (scheduled and retry → pending → active → archived), so a
// task that moves during the listing is seen twice rather than missed.
func findQueued(ctx context.Context, insp *asynq.Inspector, queue string, match *ledger.AddressMatcher) ([]*asynq.TaskInfo, error) {
	lists := []struct {
		state string
		list  func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	}{
		{"scheduled", insp.ListScheduledTasks}, {"retry", insp.ListRetryTasks}, {"pending", insp.ListPendingTasks},
		{"active", insp.ListActiveTasks}, {"archived", insp.ListArchivedTasks},
	}
	seen := map[string]bool{}
	var found []*asynq.TaskInfo
	for _, l := range lists {
		for page := 1; ; page++ {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			infos, err := l.list(queue, asynq.PageSize(erasePageSize), asynq.Page(page))
			if errors.Is(err, asynq.ErrQueueNotFound) {
				return nil, nil
			}
			if err != nil {
				return nil, fmt.Errorf("list the %s tasks of queue %q: %w", l.state, queue, err)
			}
			for _, task := range infos {
				if task.Type == tasks.TypeDispatch && !seen[task.ID] && match.MatchPayload(task.Payload) {
					seen[task.ID] = true
					found = append(found, task)
				}
			}
			if len(infos) < erasePageSize {
				break
			}
		}
	}
	return found, nil
}

// cancelQueued cancels the dispatch of a queued task, with a tombstone when PostgreSQL does not
// know it yet. A task too broken to name its dispatch is recorded as a rejected task instead
// (without its payload, which names the person).
func cancelQueued(ctx context.Context, store *ledger.Store, queue string, task *asynq.TaskInfo) error {
	id := queuedDispatchID(task)
	if id == "" {
		return store.RecordRejectedTask(ctx, task.Type, task.ID, queue,
			"deleted by an erasure: its payload named an erased recipient and no dispatch id", nil)
	}
	if _, err := store.CancelDispatch(ctx, id, ledger.EraseReason, true); err != nil {
		return fmt.Errorf("cancel dispatch %s of a queued task before deleting it: %w", id, err)
	}
	return nil
}

// queuedDispatchID is the dispatch id of a herald:dispatch task: its payload's, else its task
// id's (dispatch:<id>:<attempt>); "" when neither is a UUID.
func queuedDispatchID(task *asynq.TaskInfo) string {
	var p struct {
		DispatchID string `json:"dispatch_id"`
	}
	if json.Unmarshal(task.Payload, &p) == nil && uuid.Validate(p.DispatchID) == nil {
		return p.DispatchID
	}
	parts := strings.Split(task.ID, ":")
	if len(parts) == 3 && parts[0] == "dispatch" && uuid.Validate(parts[1]) == nil {
		return parts[1]
	}
	return ""
}
