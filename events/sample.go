package events

import (
	"strings"
	"sync/atomic"
)

// SampleMarker is carried by every value the sample helpers make. The send path refuses any
// content whose decoded text contains it, so preview data can never reach a real recipient.
// It is made of [A-Za-z0-9_-] only, so it survives URL, HTML and header encodings.
const SampleMarker = "herald-sample-x9q"

var sampleSeq atomic.Int64

// SampleString returns a recognisable sample value such as "reset-token-herald-sample-x9q".
func SampleString(prefix string) string {
	if prefix == "" {
		return SampleMarker
	}
	return prefix + "-" + SampleMarker
}

// SampleEmail returns a sample address such as "alice+herald-sample-x9q@example.com".
func SampleEmail(local string) string {
	if local == "" {
		local = "someone"
	}
	return local + "+" + SampleMarker + "@example.com"
}

// SampleID returns a distinct sample id on each call, such as "herald-sample-x9q-3".
func SampleID() string {
	return SampleMarker + "-" + itoa(sampleSeq.Add(1))
}

// ContainsSample reports whether s contains the sample marker (case-insensitively).
func ContainsSample(s string) bool {
	return strings.Contains(strings.ToLower(s), SampleMarker)
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
