package main

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
	"testing"
)

const module = "github.com/drover/terraform-provider-drover"

// importRules say which of the module's packages may import a dependency
// directly: Terraform only in the glue, libvirt only in internal/hypervisor,
// gotgt only in the target's iSCSI adapter (STYLE.md: boundaries are enforced).
var importRules = []struct {
	dep     string
	allowed []string // package path prefixes within the module
}{
	{"github.com/hashicorp/terraform-plugin-", []string{"", "provider"}},
	{"libvirt.org/go/libvirt", []string{"internal/hypervisor"}},
	{"github.com/gostor/gotgt", []string{"target/iscsi"}},
}

// forbidden are imports a layer never makes, even where importRules would
// let it: the domain does not reach back into the glue, and the cluster's
// orchestration knows neither Terraform nor libvirt (it works through
// internal/hypervisor's types and its own small interfaces).
var forbidden = []struct {
	pkg string // package path prefix within the module
	dep string // import path prefix
}{
	{"internal", module + "/provider"},
	{"internal/cluster", "github.com/hashicorp/terraform-plugin-"},
	{"internal/cluster", "libvirt.org/"},
}

// stdlibOnly are packages that import nothing but the standard library.
var stdlibOnly = []string{"internal/placement"}

// pkgImports is one package of the module and everything it and its tests
// import.
type pkgImports struct {
	rel     string // path within the module; "" for the root
	imports []string
}

func listPackages(t *testing.T) []pkgImports {
	t.Helper()
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports,TestImports,XTestImports", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkgImports
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			ImportPath                         string
			Imports, TestImports, XTestImports []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		pkgs = append(pkgs, pkgImports{rel, append(append(p.Imports, p.TestImports...), p.XTestImports...)})
	}
	return pkgs
}

func TestPackagesImportOnlyWhatTheirLayerMay(t *testing.T) {
	t.Parallel()
	for _, p := range listPackages(t) {
		rel, imports := p.rel, p.imports
		for _, imp := range imports {
			for _, f := range forbidden {
				if allowedIn(rel, []string{f.pkg}) && strings.HasPrefix(imp, f.dep) {
					t.Errorf("package %q imports %s; nothing under %s may", rel, imp, f.pkg)
				}
			}
			self := imp == module+"/"+rel // its external tests import it
			if allowedIn(rel, stdlibOnly) && !self && strings.Contains(strings.Split(imp, "/")[0], ".") {
				t.Errorf("package %q imports %s; it may import only the standard library", rel, imp)
			}
			for _, rule := range importRules {
				if !strings.HasPrefix(imp, rule.dep) {
					continue
				}
				if !allowedIn(rel, rule.allowed) {
					t.Errorf("package %q imports %s; only %q may", rel, imp, rule.allowed)
				}
			}
		}
	}
}

func allowedIn(rel string, prefixes []string) bool {
	for _, p := range prefixes {
		if rel == p || (p != "" && strings.HasPrefix(rel, p+"/")) {
			return true
		}
	}
	return false
}

// TestTheReadmeLayoutListsEveryPackage keeps README's map of the code true:
// every package of the module is named in its Layout block, by its path or,
// for a package nested in a listed one, by its last element.
func TestTheReadmeLayoutListsEveryPackage(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, layout, ok := strings.Cut(string(readme), "## Layout\n")
	if !ok {
		t.Fatal("README.md has no Layout section")
	}
	layout, _, _ = strings.Cut(strings.TrimPrefix(strings.TrimSpace(layout), "```"), "```")
	for _, p := range listPackages(t) {
		if p.rel == "" {
			continue // main.go
		}
		if !strings.Contains(layout, p.rel) && !strings.Contains(layout, path.Base(p.rel)) {
			t.Errorf("README's Layout does not name package %s", p.rel)
		}
	}
}
