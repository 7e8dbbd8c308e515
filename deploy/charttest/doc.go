// Package charttest tests the Helm chart in deploy/helm/meshcast without a
// cluster: Helm's own loader, linter and template engine render it, every
// object is decoded strictly into its Kubernetes API type, and the meshcast
// container's arguments are checked by meshcast serve --check. It also
// loads deploy/compose.yaml with the Compose Specification's own loader
// (compose-go) and checks the compose nodes' commands and the Dockerfile's
// command and settings the same way.
//
// It is a module of its own so that the meshcast binary never carries Helm
// and the Kubernetes API types.
package charttest
