package iscsi

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/store"
	"github.com/prometheus/client_golang/prometheus"
)

// complianceTimeout bounds one whole run of iscsi-test-cu (tgtd needs
// about 50 s here, drover-target about as long).
const complianceTimeout = 6 * time.Minute

// TestComplianceMatchesTgtd runs libiscsi's whole default list of tests
// (iscsi-test-cu with no -t: the ALL, SCSI, iSCSI and LINUX families, 615
// tests) in one process against our engine, and another in parallel against
// tgtd serving a file of the same size. It fails when our engine fails a
// test that tgtd passes, unless the test is listed in
// testdata/known-failures.txt, and when either run does not complete within
// complianceTimeout. One process matters: a test that leaves the initiator
// in a bad state (a PDU hook left installed) spoils every later test, and
// only a whole run shows it.
//
// Set DROVER_COMPLIANCE=1 to run it; then a missing iscsi-test-cu or tgtd
// is a failure. DROVER_COMPLIANCE_REPORT=DIR keeps the per-test table and
// both runs' output there.
func TestComplianceMatchesTgtd(t *testing.T) {
	if os.Getenv("DROVER_COMPLIANCE") == "" {
		t.Skip("set DROVER_COMPLIANCE=1 to run libiscsi's compliance suite (about a minute)")
	}
	for _, tool := range []string{"iscsi-test-cu", "iscsi-inq", "tgtd", "tgtadm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("DROVER_COMPLIANCE is set but %s is not installed (Debian: libiscsi-bin, tgt)", tool)
		}
	}
	tests := listedTests(t)
	known := knownFailures(t)
	const size = 64 << 20
	url := startComplianceEngine(t, size)
	g := startTgtd(t, newBackingFile(t, t.TempDir(), size))

	type run struct {
		name, url string
		out       string
		err       error
		elapsed   time.Duration
	}
	runs := []*run{{name: "drover-target", url: url}, {name: "tgtd", url: g.url()}}
	var wg sync.WaitGroup
	for _, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			r.out, r.err = runTool(t, complianceTimeout, "iscsi-test-cu", "--dataloss",
				"-i", testCUInitiator, "-I", testCUInitiator2, r.url)
			r.elapsed = time.Since(start)
		}()
	}
	wg.Wait()

	dir := os.Getenv("DROVER_COMPLIANCE_REPORT")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	results := make([]map[string]string, len(runs))
	for i, r := range runs {
		if err := os.WriteFile(filepath.Join(dir, r.name+".log"), []byte(r.out), 0o644); err != nil {
			t.Fatal(err)
		}
		results[i] = parseRun(tests, r.out)
		if !strings.Contains(r.out, "Run Summary:") {
			t.Errorf("iscsi-test-cu against %s did not complete (%v after %s): last test started: %s; output in %s",
				r.name, r.err, r.elapsed.Round(time.Second), lastStarted(tests, results[i]), filepath.Join(dir, r.name+".log"))
		}
	}
	if out, err := runTool(t, 10*time.Second, "iscsi-inq", "-i", testCUInitiator, url); err != nil {
		t.Errorf("engine stopped answering after the run: %v\n%s", err, out)
	}
	ours, theirs := results[0], results[1]

	var table strings.Builder
	fmt.Fprintf(&table, "%-60s %-10s %-10s\n", "TEST", "DROVER", "TGTD")
	type counts struct{ tests, ours, tgtd int }
	perFamily := map[string]*counts{}
	var families []string
	total := counts{}
	for _, n := range tests {
		fam, _, _ := strings.Cut(n, ".")
		c := perFamily[fam]
		if c == nil {
			c = &counts{}
			perFamily[fam] = c
			families = append(families, fam)
		}
		o, g := ours[n], theirs[n]
		fmt.Fprintf(&table, "%-60s %-10s %-10s\n", n, o, g)
		c.tests++
		total.tests++
		if o == "passed" {
			c.ours++
			total.ours++
		}
		if g == "passed" {
			c.tgtd++
			total.tgtd++
		}
		if g == "passed" && o != "passed" {
			if reason, ok := known[withoutFamily(n)]; ok {
				t.Logf("known failure %s (%s): got %s, tgtd passed", n, reason, o)
				continue
			}
			t.Errorf("%s: got %s, want passed (tgtd passes it)", n, o)
		}
		if o != "passed" && g != "passed" {
			t.Logf("failed by both: %s (drover %s, tgtd %s)", n, o, g)
		} else if g != "passed" {
			t.Logf("failed by tgtd only: %s (%s)", n, g)
		}
	}
	for _, n := range tests {
		if _, ok := known[withoutFamily(n)]; ok && ours[n] == "passed" {
			t.Logf("%s passes now: remove it from testdata/known-failures.txt", n)
		}
	}
	fmt.Fprintf(&table, "\n%-10s %6s %8s %8s\n", "FAMILY", "TESTS", "DROVER", "TGTD")
	for _, f := range families {
		c := perFamily[f]
		fmt.Fprintf(&table, "%-10s %6d %8d %8d\n", f, c.tests, c.ours, c.tgtd)
	}
	fmt.Fprintf(&table, "%-10s %6d %8d %8d\n", "total", total.tests, total.ours, total.tgtd)
	report := filepath.Join(dir, "compliance.txt")
	if err := os.WriteFile(report, []byte(table.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("one iscsi-test-cu process each: drover-target passed %d of %d in %s, tgtd %d of %d in %s; table in %s",
		total.ours, total.tests, runs[0].elapsed.Round(time.Second), total.tgtd, total.tests, runs[1].elapsed.Round(time.Second), report)
}

// startComplianceEngine starts an engine whose persistent reservations are
// kept in a volume store, as drover-target runs it, and exports one volume
// of size bytes to libiscsi's two initiator names.
func startComplianceEngine(t *testing.T, size int64) string {
	t.Helper()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	v, err := st.Create(context.Background(), "compliance", size>>20, store.Access{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Listen: "127.0.0.1:0", Logger: testLogger(t), Registerer: prometheus.NewRegistry(), Reservations: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: got error %v, want nil", err)
		}
	})
	ex := Export{Name: v.Name, IQN: "iqn.2026-11.io.drover:" + v.Name, Path: v.Path, Initiators: []string{testCUInitiator, testCUInitiator2}}
	if err := e.Add(ex); err != nil {
		t.Fatal(err)
	}
	return volumeURL(e, ex)
}

// listedTests is iscsi-test-cu's default list in the order it runs them,
// each as FAMILY.Suite.Test.
func listedTests(t *testing.T) []string {
	t.Helper()
	out, err := runTool(t, 10*time.Second, "iscsi-test-cu", "-l")
	if err != nil {
		t.Fatalf("iscsi-test-cu -l: %v", err)
	}
	var tests []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimSpace(l); strings.Count(l, ".") == 2 {
			tests = append(tests, l)
		}
	}
	if len(tests) == 0 {
		t.Fatalf("iscsi-test-cu -l listed no tests:\n%s", out)
	}
	return tests
}

var cunitLine = regexp.MustCompile(`(?m)^(?:Suite: (\S+)|\s*Test: (\S+) \.\.\.)`)

// parseRun turns the output of one whole iscsi-test-cu run into test →
// result ("passed", "FAILED", "no result" for one that started and did not
// end, "not run"). Suites print only their own name, and the same suite
// runs in several families, so each "Suite:" line is matched to the next
// suite of that name in the listed order.
func parseRun(tests []string, out string) map[string]string {
	res := map[string]string{}
	for _, n := range tests {
		res[n] = "not run"
	}
	cursor := 0
	family := ""
	marks := cunitLine.FindAllStringSubmatchIndex(out, -1)
	for i, m := range marks {
		if m[2] >= 0 {
			suite := out[m[2]:m[3]]
			for j := cursor; j < len(tests); j++ {
				f, rest, _ := strings.Cut(tests[j], ".")
				if s, _, _ := strings.Cut(rest, "."); s == suite {
					family, cursor = f+"."+suite, j
					break
				}
			}
			continue
		}
		end := len(out)
		if i+1 < len(marks) {
			end = marks[i+1][0]
		}
		// The tests log "[FAILED] ..." lines of their own, also in tests
		// that CUnit then counts as passed (and after its "passed"): only
		// CUnit's own verdict counts.
		body := strings.ReplaceAll(out[m[1]:end], "[FAILED]", "")
		r := "no result"
		switch {
		case strings.Contains(body, "FAILED"):
			r = "FAILED"
		case strings.Contains(body, "passed"):
			r = "passed"
		}
		res[family+"."+out[m[4]:m[5]]] = r
	}
	return res
}

// lastStarted names the last test of a run that has a result other than
// "not run".
func lastStarted(tests []string, res map[string]string) string {
	last := "none"
	for _, n := range tests {
		if res[n] != "not run" {
			last = n + " (" + res[n] + ")"
		}
	}
	return last
}

// withoutFamily is Suite.Test of FAMILY.Suite.Test: the same test runs in
// ALL, in SCSI or iSCSI, and in LINUX.
func withoutFamily(name string) string {
	_, rest, _ := strings.Cut(name, ".")
	return rest
}

// knownFailures reads testdata/known-failures.txt: "FAMILY.Suite.Test
// reason", keyed by Suite.Test.
func knownFailures(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "known-failures.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	known := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, reason, _ := strings.Cut(line, " ")
		known[withoutFamily(name)] = strings.TrimSpace(reason)
	}
	return known
}

func TestParseRunTakesCUnitsVerdict(t *testing.T) {
	t.Parallel()
	tests := []string{"ALL.Read10.Simple", "ALL.Reserve6.LUNReset", "ALL.WriteSame10.UnmapVPD", "SCSI.Read10.Simple", "SCSI.Read10.BeyondEol", "SCSI.Read10.Async"}
	out := `Suite: Read10
  Test: Simple ...passed
Suite: Reserve6
  Test: LUNReset ...passed    [FAILED] PRIN command: failed with sense. SENSE KEY:UNIT_ATTENTION(6)

Suite: WriteSame10
  Test: UnmapVPD ...    [FAILED] WRITESAME10 command failed with status 2
passed
Suite: Read10
  Test: Simple ...    [FAILED] READ10 command failed
FAILED
    1. test_read10_simple.c:50  - CU_ASSERT_EQUAL(ret,0)
  Test: BeyondEol ...`
	got := parseRun(tests, out)
	want := map[string]string{
		"ALL.Read10.Simple":        "passed",
		"ALL.Reserve6.LUNReset":    "passed",
		"ALL.WriteSame10.UnmapVPD": "passed",
		"SCSI.Read10.Simple":       "FAILED",
		"SCSI.Read10.BeyondEol":    "no result",
		"SCSI.Read10.Async":        "not run",
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("%s: got %q, want %q", n, got[n], w)
		}
	}
}
