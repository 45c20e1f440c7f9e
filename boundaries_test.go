package main

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

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

func TestPackagesImportOnlyWhatTheirLayerMay(t *testing.T) {
	t.Parallel()
	const module = "github.com/drover/terraform-provider-drover"
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports,TestImports,XTestImports", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
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
		imports := append(append(p.Imports, p.TestImports...), p.XTestImports...)
		for _, imp := range imports {
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
