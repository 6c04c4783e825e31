// Package contract holds the contract test of the versori client and the versoritest stand-in against
// Versori's published OpenAPI spec of the Embedded API v1. It has no code of its own.
//
// The test runs the client against the stand-in through a transport that validates every request
// the client sends and every response the stand-in returns against the spec, with kin-openapi's
// openapi3filter. It reads the spec from the file named by VERSORI_SPEC (a relative path is taken from
// the module root); the spec is Versori's, so it is never copied into this repository:
//
//	VERSORI_SPEC=../shared/versori/embedded-api-v1.yaml go test ./versori/contract
//
// Without VERSORI_SPEC the test skips, saying that it did not run, except under CI=true, where it fails.
//
// The spec's own bugs are excused one by one, in the specExceptions table of the test, by patching the
// document in memory; each entry checks that the bug is still there, so that a fixed spec makes the
// entry fail as stale instead of excusing something silently.
package contract
