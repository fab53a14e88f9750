// Package tasks is what asynq carries for Herald: the stable task type names (herald:dispatch,
// herald:deliver), their payloads with the codecs that check them, the deterministic task ids,
// and the handler that decodes a task and hands it to the engine through the small Handlers
// interface.
//
// Payloads carry references and sealed secrets only: never rows, rendered bodies or a secret
// in clear (they stay in Redis, and archived ones for months). Producers do not use this
// package: they dispatch through herald.Client.
//
// It imports events, asynq and the standard library; never the engine.
package tasks
