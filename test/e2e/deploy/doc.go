// Package deploy tests what deploy/ and the Dockerfile ship: the compose
// file and the systemd unit are checked against the flags meshcast has, and
// the nginx and HAProxy configurations run, as shipped but for their
// addresses, in front of a real three-node cluster. The tests run on Unix
// only.
package deploy
