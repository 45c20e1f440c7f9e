// Package wire is the JSON shapes of drover-target's management API: the
// bodies of its requests and answers, shared by the daemon (target/api) and
// its Go client (internal/storage) so that the two cannot drift apart. It is
// data only: checking a request is the daemon's job, building one the
// client's.
package wire
