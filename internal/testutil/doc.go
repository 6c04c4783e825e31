// Package testutil holds what the tests of several packages share: a Redis database of their own on
// a real server (Redis) or a redis-server process of their own (StartRedisServer), binaries built
// for process tests (GoBuild), waiting for a condition (WaitFor), and fixtures: fixed valid ULIDs
// (IntegrationID and the rest), a valid request (Request), request files (JSONL, WriteJSONL,
// WriteRows, WriteFile) and a queue's task counts (Pending, Unfinished).
//
// It imports package versori, so tests inside package versori itself cannot use it.
package testutil
