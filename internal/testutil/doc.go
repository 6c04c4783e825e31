// Package testutil holds what the tests of several packages share: a Redis database of their own on
// a real server (Redis), and waiting for a condition (WaitFor).
package testutil
