package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/heraldhq/herald/internal/cli"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
)

// eraseCmd is `enqueue erase --recipient ADDRESS_OR_ID`.
type eraseCmd struct {
	Recipient string `required:"" help:"The recipient: one whole address (any letter case; a domain or part of an address is refused) or a recipient id." placeholder:"ADDRESS_OR_ID"`
	Actor     string `help:"Who asks for the erasure, recorded in the audit log." default:"cli"`
}

// Help is the detail of `enqueue erase --help`.
func (eraseCmd) Help() string {
	return "Deletes or irreversibly redacts what Herald holds about one recipient: their deliveries lose the recipient, " +
		"recipient id and subject, and their address and name are cut out of errors and replies; deliveries to them that " +
		"have not started are canceled; dispatches lose the variables and secrets naming them (open ones are canceled); " +
		"their captured mail is deleted; rejected tasks lose the reason and kept payload naming them; dispatch tasks " +
		"naming them that still wait in the queue (HERALD_QUEUE) are canceled and deleted. Ids, times, states, attempts " +
		"and Message-IDs stay, so a delivery can still be proven. One audit row records the actor and the counts, never " +
		"the address. A delivery being sent right now cannot be taken back: it is left as it is, and the command fails " +
		"asking to run it again once it has settled; running it again is always safe. Erase the person in the " +
		"application first, or new dispatches will name them again."
}

// errEraseIncomplete is returned when an erasure left rows that were still changing.
var errEraseIncomplete = errors.New("erasure incomplete")

// Run erases the recipient from the queue, then from PostgreSQL, and fails when rows still
// changing were left (see Help).
func (c *eraseCmd) Run(ctx context.Context, e *env) error {
	who := strings.TrimSpace(c.Recipient)
	if who == "" {
		return errors.New("--recipient is empty: give an address or a recipient id")
	}
	ropt, err := e.redis()
	if err != nil {
		return err
	}
	if err := cli.PingRedis(ctx, ropt); err != nil {
		return err
	}
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	// Redis first: the addresses come from the receipts, which the erasure then redacts.
	addrs, err := store.RecipientAddresses(ctx, who)
	if err != nil {
		return err
	}
	q, err := engine.EraseQueued(ctx, ropt, store, e.queue(), addrs)
	if err != nil {
		return err
	}
	er, err := store.EraseRecipient(ctx, ledger.EraseRequest{Who: who, Actor: c.Actor, QueuedDeleted: q.Deleted, QueuedActive: q.Active})
	if err != nil {
		return err
	}
	v := struct {
		ledger.Erasure
		Complete bool `json:"complete"`
	}{er, er.Complete()}
	if err := e.print(v, func(w io.Writer) { printErasure(w, er, c.Actor) }); err != nil {
		return err
	}
	if er.Complete() {
		return nil
	}
	// Never the address or id in a message: errors end up in logs.
	fmt.Fprintf(e.errOut, "warning: %d deliver%s being sent or fanned out, %d dispatch%s still open and %d queued task%s running "+
		"were left as they are: they cannot be taken back while they change\n",
		er.InFlight, plural(er.InFlight, "y", "ies"), er.OpenDispatches, plural(er.OpenDispatches, "", "es"), er.QueuedActive, plural(er.QueuedActive, "", "s"))
	return fmt.Errorf("%w: run the same enqueue erase again once they have settled (a few seconds; a fan-out in progress, minutes)",
		errEraseIncomplete)
}

// printErasure prints what an erasure did, table by table.
func printErasure(w io.Writer, er ledger.Erasure, actor string) {
	fmt.Fprintf(w, "erasure recorded as audit entry %d (actor %s)\n", er.AuditID, actor)
	fmt.Fprintf(w, "  receipts        %d erased, %d canceled before sending, %d of other recipients redacted\n",
		er.ReceiptsErased, er.ReceiptsCanceled, er.ReceiptsRedacted)
	fmt.Fprintf(w, "  dispatches      %d redacted, %d canceled, secrets dropped from %d\n",
		er.DispatchesRedacted, er.DispatchesCanceled, er.SecretsDropped)
	fmt.Fprintf(w, "  dev_mailbox     %d deleted, %d redacted\n", er.MailDeleted, er.MailRedacted)
	fmt.Fprintf(w, "  rejected_tasks  %d redacted, %d kept payload%s dropped\n", er.RejectedRedacted, er.PayloadsDropped, plural(er.PayloadsDropped, "", "s"))
	fmt.Fprintf(w, "  queue           %d queued dispatch%s canceled and deleted\n", er.QueuedDeleted, plural(er.QueuedDeleted, "", "es"))
}
