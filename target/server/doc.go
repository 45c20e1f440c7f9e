// Package server assembles drover-target: it opens the volume store, starts
// the iSCSI engine and re-exports every volume, serves the management API
// and /metrics, and takes it all down again in order. It owns the Prometheus
// registry; nothing is registered globally.
package server
