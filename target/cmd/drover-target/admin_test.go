package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestEveryAdminCommandIsInTheUsageAndTheTable keeps the usage text and
// the dispatch table of the admin CLI the same list.
func TestEveryAdminCommandIsInTheUsageAndTheTable(t *testing.T) {
	t.Parallel()
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  drover-target ((?:volume|snapshot|snapshot-set|session|fence|schedule) [a-z]+)`).FindAllStringSubmatch(usage, -1) {
		listed[m[1]] = true
	}
	for name := range adminCommands {
		if !listed[name] {
			t.Errorf("%q is a command but not in the usage", name)
		}
	}
	for name := range listed {
		if _, ok := adminCommands[name]; !ok {
			t.Errorf("the usage lists %q, which no command runs", name)
		}
	}
	for name, cmd := range adminCommands {
		if cmd.run == nil || cmd.args == "" || (cmd.n == 0) != strings.HasPrefix(cmd.args, "no ") {
			t.Errorf("%q: %+v is not a complete command", name, cmd)
		}
	}
}
