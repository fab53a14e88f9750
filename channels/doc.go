// Package channels defines how Herald hands a rendered message to a transport: the Sender
// interface, the Message and Result types, and the error classes (temporary, permanent,
// rate-limited) that drive retries. One sub-package per transport (channels/email, …).
//
// It must never import asynq: transports classify errors, the tasks package maps them to retries.
package channels
