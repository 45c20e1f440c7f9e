package iscsi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	testInitiator  = "iqn.2026-11.io.drover.test:initiator-a"
	testInitiator2 = "iqn.2026-11.io.drover.test:initiator-b"
	// libiscsi's iscsi-test-cu logs in with these names unless told otherwise.
	testCUInitiator  = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"
	testCUInitiator2 = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2"
)

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("DROVER_ISCSI_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startEngine starts an engine on a free loopback port and closes it when
// the test ends.
func startEngine(t testing.TB) (*Engine, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e, err := New(Config{Listen: "127.0.0.1:0", Logger: testLogger(t), Registerer: reg})
	if err != nil {
		t.Fatalf("New: got error %v, want nil", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: got error %v, want nil", err)
		}
	})
	return e, reg
}

// newBackingFile creates a sparse file of size bytes.
func newBackingFile(t testing.TB, dir string, size int64) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "vol-*.raw")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// exportVolume adds a volume named name backed by a new sparse file.
func exportVolume(t testing.TB, e *Engine, name string, size int64, initiators ...string) Export {
	t.Helper()
	ex := Export{
		Name:       name,
		IQN:        "iqn.2026-11.io.drover:" + name,
		Path:       newBackingFile(t, t.TempDir(), size),
		Initiators: initiators,
	}
	if err := e.Add(ex); err != nil {
		t.Fatalf("Add(%s): got error %v, want nil", name, err)
	}
	return ex
}

func portal(e *Engine) string { return e.Addr().String() }

func volumeURL(e *Engine, ex Export) string {
	return fmt.Sprintf("iscsi://%s/%s/%d", portal(e), ex.IQN, ex.LUN)
}

func chapURL(e *Engine, ex Export, user, secret string) string {
	return fmt.Sprintf("iscsi://%s%%%s@%s/%s/%d", user, secret, portal(e), ex.IQN, ex.LUN)
}

// requireTool skips the test when an initiator tool is not installed.
func requireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Skipf("%s not installed (Debian: libiscsi-bin, qemu-utils, qemu-block-extra)", name)
	}
}

// runTool runs an initiator tool with a deadline and returns its combined output.
func runTool(t testing.TB, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	requireTool(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s timed out after %s: %w", name, timeout, ctx.Err())
	}
	return out.String(), err
}

// qemuIO runs qemu-io commands against a volume through QEMU's libiscsi driver.
func qemuIO(t testing.TB, e *Engine, ex Export, initiator string, cmds ...string) (string, error) {
	t.Helper()
	return runTool(t, 60*time.Second, "qemu-io", qemuIOArgs(e, ex, initiator, cmds...)...)
}

// qemuIOArgs is the qemu-io command line of qemuIO.
func qemuIOArgs(e *Engine, ex Export, initiator string, cmds ...string) []string {
	_, port, _ := strings.Cut(portal(e), ":")
	opts := fmt.Sprintf("driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=127.0.0.1:%s,file.target=%s,file.lun=%d,file.initiator-name=%s",
		port, ex.IQN, ex.LUN, initiator)
	args := []string{"--image-opts", "-n"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	return append(args, opts)
}

func readFile(t testing.TB, path string, off, n int64) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}
