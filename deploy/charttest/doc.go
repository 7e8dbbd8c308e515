// Package charttest tests the Helm chart in deploy/helm/meshcast without a
// cluster: Helm's own loader, linter and template engine render it, every
// object is decoded strictly into its Kubernetes API type, and the meshcast
// container's arguments are checked by meshcast serve --check.
//
// It is a module of its own so that the meshcast binary never carries Helm
// and the Kubernetes API types.
package charttest
