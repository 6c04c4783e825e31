// Package check decodes every Kubernetes manifest under deploy/k8s strictly, with the upstream
// Kubernetes API types (k8s.io/api) for built-in kinds and KEDA's CustomResourceDefinition schema for
// ScaledObject and TriggerAuthentication, so that a misspelt or misplaced field fails a test instead
// of being dropped by the API server. It is a module of its own so that the main module does not
// depend on the Kubernetes libraries; `make test` runs its tests.
package check
