package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// readPID reads a pid file; a missing file is pid 0 and no error.
func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: bad pid %q", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

func writePID(path string, pid int) error {
	return writeFileAtomic(path, []byte(strconv.Itoa(pid)+"\n"), 0o644)
}

// running tells whether pid is a live process whose command line contains
// want, so a pid recycled by an unrelated process is never taken for ours.
func running(pid int, want string) bool {
	if pid <= 0 {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// A zombie has exited; its parent just has not reaped it yet.
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			return false
		}
	}
	return bytes.Contains(cmdline, []byte(want))
}

// stopPID sends SIGTERM to pid, waits up to grace for it to exit, then sends
// SIGKILL and waits again. It is a no-op when pid is not running want.
func stopPID(pid int, want string, grace time.Duration) error {
	if !running(pid, want) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if waitExit(pid, want, grace) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if waitExit(pid, want, 10*time.Second) {
		return nil
	}
	return fmt.Errorf("process %d (%s) did not exit after SIGKILL", pid, want)
}

func waitExit(pid int, want string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !running(pid, want) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !running(pid, want)
}

// childAlive reaps a process the lab started and tells whether it still
// runs. Unlike a look at /proc, it cannot mistake a child that is slow to
// start for one that exited.
func childAlive(cmd *exec.Cmd) func() bool {
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return func() bool {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
}

// pidAlive tells whether pid, started by an earlier run of the lab, still
// runs a program whose command line contains one of names.
func pidAlive(pid int, names ...string) func() bool {
	return func() bool {
		for _, n := range names {
			if running(pid, n) {
				return true
			}
		}
		return false
	}
}
