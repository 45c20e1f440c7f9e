// Command drover-target is the Drover storage box daemon (`serve`: volumes
// over iSCSI plus the management API) and a small admin CLI for that API
// (`volume`, `snapshot`, `session`). main only wires signals to run.
package main
