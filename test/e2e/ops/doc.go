// Package ops runs meshcast end to end as operators meet it: the command
// line (serve, version, sign, bench), publish and play authorization, the
// admin token and CORS, sessions and webhooks, Prometheus metrics, Socket.IO
// events and the web dashboard in Chromium. The tests run on Unix only.
package ops
