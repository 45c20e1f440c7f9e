// Package hypervisortest gives tests hosts of libvirt's test driver: each a
// fake host in the test's own process, no daemon needed, that
// hypervisor.Pool connects to like any other.
package hypervisortest

import (
	"os"
	"path/filepath"
	"testing"
)

// Node is a test-driver node: a fake host of 6 CPUs and 4 GiB.
const Node = `<node>
  <cpu><mhz>2000</mhz><model>i686</model><active>6</active><total>6</total>
    <nodes>1</nodes><sockets>1</sockets><cores>3</cores><threads>2</threads></cpu>
  <memory>4194304</memory>
</node>`

// NewHost writes a node file of Node and returns its URI. Each URI is a host
// of its own, so tests do not see each other's domains.
func NewHost(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node.xml")
	if err := os.WriteFile(path, []byte(Node), 0o644); err != nil {
		t.Fatal(err)
	}
	return "test://" + path
}
