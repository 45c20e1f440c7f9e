package main

import (
	"fmt"
	"io"
)

// version and commit are set at build time (make build):
// -ldflags "-X main.version=0.1.0 -X main.commit=abc1234".
var (
	version = "dev"
	commit  = "unknown"
)

// printVersion is `drover-target version`.
func printVersion(stdout io.Writer) error {
	_, err := fmt.Fprintf(stdout, "drover-target %s (commit %s)\n", version, commit)
	return err
}
