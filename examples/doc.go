// Package examples holds Herald's example events and the application tables they read: the
// password reset of AshDispatch's guide (a signed, expiring token minted at send time when the
// producer passed none) and an example users table with its migration and loader. The
// reference worker (cmd/worker) registers them; the README's tour dispatches them.
package examples
