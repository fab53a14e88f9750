package engine

import "time"

// roundUp rounds t up to the next whole second: asynq truncates ProcessAt to seconds, which
// would run a delayed task up to a second early.
func roundUp(t time.Time) time.Time {
	if r := t.Truncate(time.Second); !r.Equal(t) {
		return r.Add(time.Second)
	}
	return t
}
