// Package check holds the deployment checks that need heavy libraries: its tests decode every
// Kubernetes manifest under deploy/k8s strictly, with the upstream Kubernetes API types (k8s.io/api)
// for built-in kinds and KEDA's CustomResourceDefinition schema for ScaledObject and
// TriggerAuthentication, so that a misspelt or misplaced field fails a test instead of being dropped
// by the API server; and they lint the Grafana dashboards with grafana/dashboard-linter's rules in
// strict mode, parsing PromQL with Prometheus's own parser. It is a module of its own so that the
// main module does not depend on those libraries; `make test` runs its tests.
package check
