// Package deploy holds deployment files (Prometheus, Grafana, Docker, Kubernetes) and the tests that check them.
package deploy
