package iscsi

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHostileProbes runs the hostile-client probes of hostile_test.go
// against drover-target's engine in a process of its own (the servevolume
// command) and against tgtd, in the same run, and prints each target's RSS
// (before, peak, after) and how long a legitimate login + INQUIRY by a real
// initiator (iscsi-inq) took during the probe. Run it once:
//
//	go test -run '^$' -bench HostileProbes -benchtime 1x ./target/iscsi/
func BenchmarkHostileProbes(b *testing.B) {
	requireTool(b, "iscsi-inq")
	dir := b.TempDir()
	bin := filepath.Join(dir, "servevolume")
	if out, err := exec.Command("go", "build", "-o", bin, "./internal/servevolume").CombinedOutput(); err != nil {
		b.Fatalf("build servevolume: %v\n%s", err, out)
	}
	targets := []*probeTarget{startServeVolume(b, bin), startTgtdTarget(b, dir)}

	var kvs []kv
	kvs = append(kvs, kv{"InitiatorName", testInitiator}, kv{"TargetName", "iqn.2026-11.io.drover:hostile"}, kv{"AuthMethod", "None"})
	for i := 0; i < 5000; i++ {
		kvs = append(kvs, kv{fmt.Sprintf("X-probe-%05d-padding", i), "value"})
	}
	text := marshalText(kvs)
	k := make([]byte, 1<<20)
	for i := range k {
		k[i] = 'k'
	}
	var idle struct {
		sync.Mutex
		conns []net.Conn
	}
	probes := []struct {
		name   string
		attack func(addr string, stop <-chan struct{}, started func())
		after  func()
	}{
		{"200 connections of random bytes", randomBytesAttack(200, 20, randomChunk(1, 1<<20)), nil},
		{"32 login headers announcing 16 MiB", hugeSegmentsAttack(32, make([]byte, 1<<20)), nil},
		{"login text in 16 MiB continuations", hugeContinuationsAttack(k), nil},
		{fmt.Sprintf("one %d KB login PDU with 5000 keys", len(text)/1000), func(addr string, stop <-chan struct{}, started func()) {
			c, err := dialProbe(addr, 0)
			if err != nil {
				return
			}
			defer c.Close()
			started()
			pdu := append(append(loginHeader(len(text), false), text...), make([]byte, (4-len(text)%4)%4)...)
			c.SetDeadline(time.Now().Add(hostileProbeBudget))
			if _, err := c.Write(pdu); err == nil {
				io.Copy(io.Discard, bufio.NewReader(c))
			}
		}, nil},
		{"500 idle connections", func(addr string, stop <-chan struct{}, started func()) {
			var wg sync.WaitGroup
			for i := 0; i < 500; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if c, err := dialProbe(addr, i); err == nil {
						idle.Lock()
						idle.conns = append(idle.conns, c)
						idle.Unlock()
					}
				}()
			}
			wg.Wait()
			started()
		}, func() {
			idle.Lock()
			for _, c := range idle.conns {
				c.Close()
			}
			idle.conns = nil
			idle.Unlock()
		}},
	}

	var table strings.Builder
	fmt.Fprintf(&table, "\n| probe | drover-target RSS (MiB) | login+INQUIRY | tgtd RSS (MiB) | login+INQUIRY |\n| --- | --- | --- | --- | --- |\n")
	for _, p := range probes {
		fmt.Fprintf(&table, "| %s |", p.name)
		for _, tg := range targets {
			r := tg.run(b, p.attack)
			if p.after != nil {
				p.after()
			}
			fmt.Fprintf(&table, " %.1f → %.1f peak, %.1f after | %s |", mib(r.before), mib(r.peak), mib(r.after), r.login)
			b.ReportMetric(mib(r.peak-r.before), tg.name+"-"+metricName(p.name)+"-MiB")
		}
		table.WriteString("\n")
	}
	b.Log(table.String())
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func metricName(probe string) string {
	return strings.Trim(regexp.MustCompile(`[^a-z0-9]+`).ReplaceAllString(strings.ToLower(probe), "-"), "-")
}

// probeTarget is a target in a process of its own, whose RSS the
// benchmark samples, and the URL a legitimate initiator uses.
type probeTarget struct {
	name string
	pid  int
	addr string
	url  string
}

type probeResult struct {
	before, peak, after int64
	login               string
}

// run runs one attack against the target: RSS is sampled until a second
// after it ends, and a legitimate login + INQUIRY is made once it has
// started.
func (tg *probeTarget) run(b *testing.B, attack func(addr string, stop <-chan struct{}, started func())) probeResult {
	b.Helper()
	inquiry(b, tg) // warm up
	res := probeResult{before: processRSS(tg.pid)}
	res.peak = res.before
	sampling := make(chan struct{})
	var sampled sync.WaitGroup
	sampled.Add(1)
	go func() {
		defer sampled.Done()
		for {
			if r := processRSS(tg.pid); r > res.peak {
				res.peak = r
			}
			select {
			case <-sampling:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	stop, started, finished := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() {
		defer close(finished)
		attack(tg.addr, stop, func() { once.Do(func() { close(started) }) })
	}()
	select {
	case <-started:
	case <-finished:
	case <-time.After(hostileProbeBudget):
	}
	res.login = inquiry(b, tg)
	select {
	case <-finished:
	case <-time.After(hostileProbeBudget):
	}
	close(stop)
	<-finished
	time.Sleep(time.Second)
	close(sampling)
	sampled.Wait()
	res.after = processRSS(tg.pid)
	return res
}

// inquiry is iscsi-inq's login and INQUIRY against the target, timed; an
// error is reported in the cell rather than ending the benchmark.
func inquiry(b *testing.B, tg *probeTarget) string {
	start := time.Now()
	out, err := exec.Command("timeout", "10", "iscsi-inq", "-i", testInitiator, tg.url).CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return fmt.Sprintf("failed after %s (%v: %s)", d.Round(time.Millisecond), err, strings.TrimSpace(string(out)))
	}
	return d.Round(100 * time.Microsecond).String()
}

// processRSS is pid's resident set size.
func processRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// startServeVolume runs the engine in the servevolume command on a free
// loopback port, stopped by its PID at cleanup.
func startServeVolume(b *testing.B, bin string) *probeTarget {
	b.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(b))
	cmd := exec.Command(bin, "-listen", addr, "-size-mib", "16", "-initiators", testInitiator)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("servevolume: %v", err)
	}
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "serving ")
	if !ok {
		b.Fatalf("servevolume said %q", line)
	}
	go io.Copy(io.Discard, out)
	return &probeTarget{name: "drover", pid: cmd.Process.Pid, addr: addr, url: url}
}

func startTgtdTarget(b *testing.B, dir string) *probeTarget {
	b.Helper()
	g := startTgtd(b, newBackingFile(b, dir, 16<<20))
	return &probeTarget{name: "tgtd", pid: g.pid(), addr: g.addr, url: g.url()}
}
