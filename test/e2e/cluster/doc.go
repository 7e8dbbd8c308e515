// Package cluster runs meshcast clusters end to end: meshcast processes
// sharing a real Redis, or in-process nodes sharing an in-memory registry;
// relays and their tree, ownership and failover, a Redis outage, balancing
// viewers and draining a node. The tests run on Unix only.
package cluster
