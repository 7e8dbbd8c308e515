// Package security attacks the meshcast binary with hostile clients
// (malformed and abandoned connections, slow readers, hostile names, paths
// and media) and audiences from behind one address, while a healthy
// publisher and viewer carry on. Its tests measure the server (open files,
// goroutines, memory, CPU) and run one at a time. The tests run on Unix
// only.
package security
