package iscsi

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkThroughput compares our engine with tgtd and with the raw backing
// file, using qemu-img bench (QEMU's libiscsi initiator for the targets) as
// the one client for all three, on loopback. It prints one table and is meant
// to run once: go test -run '^$' -bench Throughput -benchtime 1x ./target/iscsi/
// DROVER_BENCH_REPS sets the repetitions per cell (run interleaved across the
// three columns; the median is kept; default 3).
//
// qemu-img bench has no random pattern, so the 4 KiB rows are strided: each
// request is 1 MiB + 4 KiB after the previous one, wrapping at the end.
func BenchmarkThroughput(b *testing.B) {
	requireTool(b, "qemu-img")
	reps := 3
	if n, err := strconv.Atoi(os.Getenv("DROVER_BENCH_REPS")); err == nil && n > 0 {
		reps = n
	}
	const size = 256 << 20
	path := newBackingFile(b, b.TempDir(), size)
	fillFile(b, path, size)

	e, _ := startEngine(b)
	ex := Export{Name: "bench", IQN: "iqn.2026-11.io.drover:bench", Path: path, Initiators: []string{"iqn.2008-11.org.linux-kvm"}}
	if err := e.Add(ex); err != nil {
		b.Fatal(err)
	}
	g := startTgtd(b, path)

	type workload struct {
		name  string
		args  []string
		bytes int64
		iops  bool
	}
	var workloads []workload
	for _, w := range []struct {
		write bool
		name  string
	}{{false, "read"}, {true, "write"}} {
		for _, depth := range []int{1, 16} {
			args := []string{"-c", "384", "-s", "1M", "-d", strconv.Itoa(depth)}
			if w.write {
				args = append(args, "-w")
			}
			workloads = append(workloads, workload{fmt.Sprintf("seq 1M %s qd%d", w.name, depth), args, 384 << 20, false})
		}
	}
	for _, w := range []struct {
		write bool
		name  string
	}{{false, "read"}, {true, "write"}} {
		for _, depth := range []int{1, 16} {
			n := 15000
			if depth == 16 {
				n = 40000
			}
			args := []string{"-c", strconv.Itoa(n), "-s", "4K", "-S", "1052672", "-d", strconv.Itoa(depth)}
			if w.write {
				args = append(args, "-w")
			}
			workloads = append(workloads, workload{fmt.Sprintf("4K strided %s qd%d", w.name, depth), args, int64(n), true})
		}
	}

	type cell struct{ secs, cpu float64 }
	once := func(wl workload, target string) cell {
		var args []string
		var cpu func() float64
		switch target {
		case "drover":
			args = []string{"bench", "-f", "raw", "-n", "-t", "none", "--image-opts"}
			args = append(args, wl.args...)
			args = append(args, fmt.Sprintf("driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=%s,file.target=%s,file.lun=0,file.initiator-name=%s",
				portal(e), ex.IQN, ex.Initiators[0]))
			args = slices.DeleteFunc(args, func(s string) bool { return s == "-f" || s == "raw" })
			cpu = selfCPU
		case "tgtd":
			args = append([]string{"bench", "-f", "raw", "-n", "-t", "none"}, wl.args...)
			args = append(args, g.url())
			cpu = func() float64 { return processCPU(g.pid()) }
		case "raw":
			args = append([]string{"bench", "-f", "raw", "-t", "writeback"}, wl.args...)
			args = append(args, path)
			cpu = func() float64 { return 0 }
		}
		c0 := cpu()
		out, err := runTool(b, 5*time.Minute, "qemu-img", args...)
		if err != nil {
			b.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return cell{secs: benchSeconds(b, out), cpu: cpu() - c0}
	}
	// run measures a workload on the three targets, interleaved and in a
	// rotating order (drover tgtd raw, tgtd raw drover, ...), so that a busy
	// spell of the shared machine or the page cache state left by the
	// previous run does not fall on one column only; the median run is kept.
	targets := []string{"drover", "tgtd", "raw"}
	run := func(wl workload) map[string]cell {
		cells := map[string][]cell{}
		for i := 0; i < reps; i++ {
			for j := range targets {
				t := targets[(i+j)%len(targets)]
				cells[t] = append(cells[t], once(wl, t))
			}
		}
		med := map[string]cell{}
		for t, cs := range cells {
			slices.SortFunc(cs, func(a, b cell) int { return int((a.secs - b.secs) * 1e9) })
			med[t] = cs[len(cs)/2]
		}
		return med
	}

	var out strings.Builder
	fmt.Fprintf(&out, "\niSCSI throughput, %s, %s, qemu-img bench over loopback, median of %d\n", time.Now().Format("2006-01-02"), machine(), reps)
	fmt.Fprintf(&out, "%-22s %12s %12s %12s %9s %9s %11s %10s\n", "workload", "drover", "tgtd", "raw file", "cpu drv", "cpu tgtd", "drover/tgtd", "drover/raw")
	for _, wl := range workloads {
		m := run(wl)
		d, t, r := m["drover"], m["tgtd"], m["raw"]
		rate := func(c cell) float64 {
			if wl.iops {
				return float64(wl.bytes) / c.secs
			}
			return float64(wl.bytes) / c.secs / 1e6
		}
		unit := "MB/s"
		if wl.iops {
			unit = "IOPS"
		}
		fmt.Fprintf(&out, "%-22s %7.0f %4s %7.0f %4s %7.0f %4s %8.2fs %8.2fs %11.2f %10.2f\n", wl.name,
			rate(d), unit, rate(t), unit, rate(r), unit, d.cpu, t.cpu, rate(d)/rate(t), rate(d)/rate(r))
	}
	if rss, err := idleVolumesRSS(); err != nil {
		fmt.Fprintf(&out, "RSS with 100 idle volumes: unavailable (%v)\n", err)
	} else {
		fmt.Fprintf(&out, "RSS with 100 idle volumes exported: %.1f MiB (goal <= 64 MiB)\n", float64(rss)/1024)
	}
	fmt.Print(out.String())
}

// fillFile writes non-zero data over the whole file so reads hit real blocks.
func fillFile(tb testing.TB, path string, size int64) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		w.Write(buf)
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
}

var benchTime = regexp.MustCompile(`Run completed in ([0-9.]+) seconds`)

func benchSeconds(tb testing.TB, out string) float64 {
	tb.Helper()
	m := benchTime.FindStringSubmatch(out)
	if m == nil {
		tb.Fatalf("qemu-img bench output: got %q, want \"Run completed in N seconds\"", out)
	}
	s, _ := strconv.ParseFloat(m[1], 64)
	return max(s, 1e-6)
}

// selfCPU is this process's user+system CPU time in seconds; the engine
// runs in it, qemu-img does not (children are not counted in RUSAGE_SELF).
func selfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// processCPU reads user+system time of another process from /proc (100 Hz ticks).
func processCPU(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(fields[11], 64)
	st, _ := strconv.ParseFloat(fields[12], 64)
	return (ut + st) / 100
}

func machine() string {
	var u syscall.Utsname
	syscall.Uname(&u)
	conv := func(a [65]int8) string {
		var b []byte
		for _, c := range a {
			if c == 0 {
				break
			}
			b = append(b, byte(c))
		}
		return string(b)
	}
	cpus := 0
	if f, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		cpus = strings.Count(string(f), "processor\t:")
	}
	return fmt.Sprintf("%s %s, %d CPUs", conv(u.Sysname), conv(u.Release), cpus)
}

// idleVolumesRSS runs BenchmarkIdleVolumesRSS's export in a child process
// and returns the RSS (KiB) it reports, so that nothing else of the run is
// counted.
func idleVolumesRSS() (int, error) {
	cmd := exec.Command(os.Args[0], "-test.run", "^$", "-test.bench", "^BenchmarkIdleVolumesRSS$", "-test.benchtime", "1x")
	cmd.Env = append(os.Environ(), "DROVER_RSS_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	m := regexp.MustCompile(`RSS_KIB=(\d+)`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no RSS in %q", out)
	}
	return strconv.Atoi(string(m[1]))
}

// BenchmarkIdleVolumesRSS reports the RSS of a process that exports 100
// idle 1 GiB volumes (goal <= 64 MiB). The export runs in a child process
// of the test binary (DROVER_RSS_CHILD=1), which prints its RSS.
func BenchmarkIdleVolumesRSS(b *testing.B) {
	if os.Getenv("DROVER_RSS_CHILD") == "" {
		kib, err := idleVolumesRSS()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(kib)/1024, "MiB-RSS")
		return
	}
	e, _ := startEngine(b)
	dir := b.TempDir()
	for i := 0; i < 100; i++ {
		ex := Export{Name: fmt.Sprintf("idle-%03d", i), IQN: fmt.Sprintf("iqn.2026-11.io.drover:idle-%03d", i),
			Path: newBackingFile(b, dir, 1<<30), Initiators: []string{testInitiator}}
		if err := e.Add(ex); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			fmt.Printf("RSS_KIB=%s\n", strings.Fields(l)[1])
		}
	}
}
