// Package archtest holds the test that keeps Herald's dependencies pointing one way.
package archtest
