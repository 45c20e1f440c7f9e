package iscsi

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

const familyTimeout = 90 * time.Second

// TestComplianceMatchesTgtd runs libiscsi's iscsi-test-cu, family by family,
// against our engine and against tgtd serving a file of the same size. It
// fails when our engine fails a test that tgtd passes, unless the test is
// listed in testdata/known-failures.txt. Set DROVER_COMPLIANCE=1 to run it;
// DROVER_COMPLIANCE_FAMILIES=SCSI.Read10,iSCSI.iSCSITMF limits the families
// and DROVER_COMPLIANCE_REPORT=FILE keeps the per-test table.
func TestComplianceMatchesTgtd(t *testing.T) {
	if os.Getenv("DROVER_COMPLIANCE") == "" {
		t.Skip("set DROVER_COMPLIANCE=1 to run libiscsi's compliance suite (several minutes)")
	}
	requireTool(t, "iscsi-test-cu")
	const size = 64 << 20
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "compliance", size, testCUInitiator, testCUInitiator2)
	g := startTgtd(t, newBackingFile(t, t.TempDir(), size))

	families := complianceFamilies(t)
	known := knownFailures(t)
	type outcome struct{ ours, tgtd string }
	results := map[string]*outcome{}
	var mu sync.Mutex
	record := func(res map[string]string, ours bool) {
		mu.Lock()
		defer mu.Unlock()
		for name, r := range res {
			o := results[name]
			if o == nil {
				o = &outcome{ours: "not run", tgtd: "not run"}
				results[name] = o
			}
			if ours {
				o.ours = r
			} else {
				o.tgtd = r
			}
		}
	}
	start := time.Now()
	for _, fam := range families {
		var wg sync.WaitGroup
		for _, target := range []struct {
			ours bool
			url  string
		}{{true, volumeURL(e, ex)}, {false, g.url()}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := runTool(t, familyTimeout, "iscsi-test-cu", "--dataloss", "-t", fam, target.url)
				res := parseCUnit(fam, out)
				if err != nil && strings.Contains(err.Error(), "timed out") {
					for name, r := range res {
						if r == "no result" {
							res[name] = "hung"
						}
					}
					if len(res) == 0 {
						res[fam+".*"] = "hung"
					}
				}
				record(res, target.ours)
			}()
		}
		wg.Wait()
		if out, err := runTool(t, 10*time.Second, "iscsi-inq", "-i", testCUInitiator, volumeURL(e, ex)); err != nil {
			t.Fatalf("engine stopped answering after family %s: %v\n%s", fam, err, out)
		}
	}

	names := make([]string, 0, len(results))
	for n := range results {
		names = append(names, n)
	}
	sort.Strings(names)
	var table strings.Builder
	fmt.Fprintf(&table, "%-60s %-10s %-10s\n", "TEST", "DROVER", "TGTD")
	var oursPass, tgtdPass, regressions int
	for _, n := range names {
		o := results[n]
		fmt.Fprintf(&table, "%-60s %-10s %-10s\n", n, o.ours, o.tgtd)
		if o.ours == "passed" {
			oursPass++
		}
		if o.tgtd == "passed" {
			tgtdPass++
		}
		if o.tgtd == "passed" && o.ours != "passed" {
			if reason, ok := known[n]; ok {
				t.Logf("known failure %s (%s): got %s, tgtd passed", n, reason, o.ours)
				continue
			}
			regressions++
			t.Errorf("%s: got %s, want passed (tgtd passes it)", n, o.ours)
		}
	}
	for n := range known {
		if o, ok := results[n]; ok && o.ours == "passed" {
			t.Logf("%s passes now: remove it from testdata/known-failures.txt", n)
		}
	}
	report := filepath.Join(t.TempDir(), "compliance.txt")
	if p := os.Getenv("DROVER_COMPLIANCE_REPORT"); p != "" {
		report = p
	}
	if err := os.WriteFile(report, []byte(table.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("compliance (%d families, %s): drover passed %d of %d, tgtd passed %d of %d; %d unexpected failures; table in %s",
		len(families), time.Since(start).Round(time.Second), oursPass, len(names), tgtdPass, len(names), regressions, report)
}

// complianceFamilies lists iscsi-test-cu's SCSI.* and iSCSI.* families.
func complianceFamilies(t *testing.T) []string {
	t.Helper()
	if f := os.Getenv("DROVER_COMPLIANCE_FAMILIES"); f != "" {
		return strings.Split(f, ",")
	}
	out, err := runTool(t, 10*time.Second, "iscsi-test-cu", "-l")
	if err != nil {
		t.Fatalf("iscsi-test-cu -l: %v", err)
	}
	var fams []string
	for _, l := range strings.Split(out, "\n") {
		parts := strings.Split(strings.TrimSpace(l), ".")
		if len(parts) == 2 && (parts[0] == "SCSI" || parts[0] == "iSCSI") {
			fams = append(fams, parts[0]+"."+parts[1])
		}
	}
	if len(fams) == 0 {
		t.Fatalf("iscsi-test-cu -l listed no families:\n%s", out)
	}
	return slices.Compact(fams)
}

var cunitTest = regexp.MustCompile(`(?m)^\s*Test: (\S+) \.\.\.`)
var cunitSuite = regexp.MustCompile(`(?m)^Suite: (\S+)`)

// parseCUnit turns iscsi-test-cu's console output into test → result.
func parseCUnit(family, out string) map[string]string {
	prefix, _, _ := strings.Cut(family, ".")
	res := map[string]string{}
	suites := cunitSuite.FindAllStringSubmatchIndex(out, -1)
	tests := cunitTest.FindAllStringSubmatchIndex(out, -1)
	for i, m := range tests {
		suite := ""
		for _, s := range suites {
			if s[0] < m[0] {
				suite = out[s[2]:s[3]]
			}
		}
		end := len(out)
		if i+1 < len(tests) {
			end = tests[i+1][0]
		}
		body := out[m[1]:end]
		r := "no result"
		switch {
		case strings.Contains(body, "FAILED"):
			r = "FAILED"
		case strings.Contains(body, "passed"):
			r = "passed"
		}
		res[prefix+"."+suite+"."+out[m[2]:m[3]]] = r
	}
	return res
}

// knownFailures reads testdata/known-failures.txt: "TEST-NAME  reason".
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
		known[name] = strings.TrimSpace(reason)
	}
	return known
}
