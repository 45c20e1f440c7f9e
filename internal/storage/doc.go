// Package storage is the Go client of drover-target's management API. The
// Terraform provider and the daemon's own CLI use it; every method takes a
// context whose deadline bounds the request.
package storage
