package lab

import (
	"bytes"
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// readCPIO parses a newc archive back into entries, to check writeCPIO.
func readCPIO(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+6+8*i+8]), 16, 32)
		if err != nil {
			t.Fatalf("bad cpio header field %d at offset %d: %v", i, off, err)
		}
		return uint32(v)
	}
	for {
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("cpio magic at offset %d: got %q, want 070701", off, b[off:off+6])
		}
		mode, size, major, minor, namesize := field(1), int(field(6)), field(9), field(10), int(field(11))
		name := string(b[off+110 : off+110+namesize-1])
		data := off + align(110+namesize)
		if name == "TRAILER!!!" {
			return out
		}
		out = append(out, cpioEntry{Name: name, Mode: mode, Data: b[data : data+size], Major: major, Minor: minor})
		off = align(data + size)
	}
}

func TestCPIOArchiveReadsBackWithParentsFirst(t *testing.T) {
	t.Parallel()
	in := []cpioEntry{
		{Name: "init", Mode: modeFile | 0o755, Data: []byte("#!/bin/sh\n")},
		{Name: "dev/console", Mode: modeCharDev | 0o600, Major: 5, Minor: 1},
		{Name: "dev", Mode: modeDir | 0o755},
		{Name: "bin/sh", Mode: modeSymlink | 0o777, Data: []byte("busybox")},
		{Name: "bin", Mode: modeDir | 0o755},
	}
	var buf bytes.Buffer
	if err := writeCPIO(&buf, in); err != nil {
		t.Fatal(err)
	}
	got := readCPIO(t, buf.Bytes())
	wantOrder := []string{"bin", "bin/sh", "dev", "dev/console", "init"}
	if len(got) != len(wantOrder) {
		t.Fatalf("got %d entries, want %d", len(got), len(wantOrder))
	}
	for i, e := range got {
		if e.Name != wantOrder[i] {
			t.Errorf("entry %d: got %q, want %q", i, e.Name, wantOrder[i])
		}
	}
	console := got[3]
	if console.Mode != modeCharDev|0o600 || console.Major != 5 || console.Minor != 1 {
		t.Errorf("dev/console: got mode %o dev %d:%d, want %o dev 5:1", console.Mode, console.Major, console.Minor, modeCharDev|0o600)
	}
	if string(got[4].Data) != "#!/bin/sh\n" {
		t.Errorf("init: got %q, want the script", got[4].Data)
	}
}

func TestHostConfigsListenOnTheirOwnAddressWithDistinctUUIDs(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	for _, h := range defaultHosts {
		conf := h.libvirtdConf()
		for _, want := range []string{`listen_addr = "` + h.Addr + `"`, `host_uuid = "` + h.UUID + `"`, "listen_tls = 0"} {
			if !strings.Contains(conf, want) {
				t.Errorf("host %s libvirtd.conf lacks %s:\n%s", h.Name, want, conf)
			}
		}
		if !strings.Contains(h.qemuConf(), `migration_address = "`+h.Addr+`"`) {
			t.Errorf("host %s qemu.conf does not bind migrations to %s", h.Name, h.Addr)
		}
		if !strings.HasPrefix(h.Addr, "127.") {
			t.Errorf("host %s listens on %s, want a loopback address", h.Name, h.Addr)
		}
		if other, dup := seen[h.UUID]; dup {
			t.Errorf("hosts %s and %s share UUID %s: libvirt refuses to migrate between them", h.Name, other, h.UUID)
		}
		seen[h.UUID] = h.Name
	}
	if a, b := defaultHosts[0].MigPort, defaultHosts[1].MigPort; a[1] >= b[0] && b[1] >= a[0] {
		t.Errorf("migration port ranges overlap: %v and %v", a, b)
	}
}

func TestTfvarsSetExactlyTheLabVariables(t *testing.T) {
	t.Parallel()
	info := Info{AlphaURI: "a", BetaURI: "b", StorageEndpoint: "e", StorageToken: `t"${x}`, StoragePortal: "p", GuestKernel: "/k", GuestInitrd: "/i"}
	var names []string
	for _, line := range strings.Split(info.tfvars(), "\n") {
		if name, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			names = append(names, strings.TrimSpace(name))
		}
	}
	want := "alpha_uri beta_uri storage_endpoint storage_token storage_portal guest_kernel guest_initrd"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("tfvars variables: got %q, want %q", got, want)
	}
	if !strings.Contains(info.tfvars(), `"t\"$${x}"`) {
		t.Errorf("token not escaped for HCL: %s", info.tfvars())
	}
}

func TestStopPIDLeavesOtherProgramsAlone(t *testing.T) {
	t.Parallel()
	// Our own pid is alive but is not a "libvirtd": stopPID must not signal it.
	if err := stopPID(os.Getpid(), "libvirtd-not-this-test", 0); err != nil {
		t.Fatalf("stopPID on a foreign process: %v", err)
	}
	if !running(os.Getpid(), filepath.Base(os.Args[0])) {
		t.Fatalf("running(self) = false, want true")
	}
}

func TestFindWithoutLabSaysHowToStartIt(t *testing.T) {
	t.Parallel()
	_, err := Load(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "make lab") {
		t.Fatalf("Load on an empty folder: got %v, want an error naming `make lab`", err)
	}
}

// TestAccLabUpIsIdempotent runs against the lab that `make testacc` started:
// a second Up finds every process running and changes none of them.
func TestAccLabUpIsIdempotent(t *testing.T) {
	if os.Getenv("TF_ACC") == "" {
		t.Skip("set TF_ACC=1 (make testacc) to run against the lab")
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(filepath.Join(root, ".lab"), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	before, err := Load(l.Dir)
	if err != nil {
		t.Fatalf("the lab is not running: %v", err)
	}
	pids := func() map[string]int {
		m := map[string]int{}
		for _, h := range defaultHosts {
			m[h.Name], _ = readPID(filepath.Join(l.hostDir(h), "pid"))
		}
		m["target"], _ = readPID(filepath.Join(l.targetDir(), "pid"))
		m["target tls"], _ = readPID(filepath.Join(l.tlsBoxDir(), "pid"))
		return m
	}
	pidsBefore := pids()
	after, err := l.Up(context.Background())
	if err != nil {
		t.Fatalf("second Up: %v", err)
	}
	if after != before {
		t.Errorf("second Up changed the lab's info: got %+v, want %+v", after, before)
	}
	for name, pid := range pids() {
		if pid == 0 || pid != pidsBefore[name] {
			t.Errorf("%s: pid %d after the second Up, want %d (still running)", name, pid, pidsBefore[name])
		}
	}
}

func TestSSHTfvarsSetOnlyTheHostURIsOverSSH(t *testing.T) {
	t.Parallel()
	l, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	info := Info{AlphaSSHURI: l.sshURI(defaultHosts[0]), BetaSSHURI: l.sshURI(defaultHosts[1])}
	var set []string
	for _, line := range strings.Split(info.sshTfvars(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, _ := strings.Cut(line, "=")
		set = append(set, strings.TrimSpace(name))
		if !strings.Contains(value, `"qemu+ssh://root@127.0.0.`) || !strings.Contains(value, ":2322/system?command=") {
			t.Errorf("%s: got %s, want a qemu+ssh URI to the host's loopback address", name, value)
		}
	}
	if strings.Join(set, ",") != "alpha_uri,beta_uri" {
		t.Errorf("ssh.tfvars sets %q, want exactly alpha_uri and beta_uri", set)
	}
}

func TestHostSSHDListensOnItsOwnAddressWithKeysOnly(t *testing.T) {
	t.Parallel()
	l, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.prepareSSH(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, h := range defaultHosts {
		if err := l.prepareHostSSH(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(l.hostDir(h), "ssh", "sshd_config"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"ListenAddress " + h.Addr + ":2322\n", "PasswordAuthentication no\n", "KbdInteractiveAuthentication no\n", "PermitRootLogin prohibit-password\n"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("host %s sshd_config lacks %q:\n%s", h.Name, want, b)
			}
		}
	}
}

func TestTLSTfvarsPointTheStorageSettingsAtTheTLSBox(t *testing.T) {
	t.Parallel()
	info := Info{TLSStorageEndpoint: "https://" + tlsBoxAPI, TLSStoragePortal: tlsBoxPortal, StorageCAFile: "/lab/tls/ca.pem"}
	got := map[string]string{}
	for _, line := range strings.Split(info.tlsTfvars(), "\n") {
		if name, value, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			got[strings.TrimSpace(name)] = strings.TrimSpace(value)
		}
	}
	want := map[string]string{
		"storage_endpoint": `"https://127.0.0.4:3261"`,
		"storage_portal":   `"127.0.0.4:3260"`,
		"storage_ca_file":  `"/lab/tls/ca.pem"`,
	}
	if len(got) != len(want) {
		t.Errorf("tls.tfvars sets %v, want exactly %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("tls.tfvars: %s = %s, want %s", k, got[k], v)
		}
	}
}

func TestTheTLSBoxCertificateIsTheLabCAsForItsAddressAndKept(t *testing.T) {
	t.Parallel()
	l, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	made, err := l.prepareTLS()
	if err != nil || !made {
		t.Fatalf("first prepareTLS: made %v, %v; want a new CA and certificate", made, err)
	}
	if err := checkCert(l.tlsCAFile(), l.tlsCertFile(), l.tlsKeyFile(), tlsBoxAddr); err != nil {
		t.Fatalf("the certificate does not verify for %s with the lab's CA: %v", tlsBoxAddr, err)
	}
	if err := checkCert(l.tlsCAFile(), l.tlsCertFile(), l.tlsKeyFile(), "127.0.0.1"); err == nil {
		t.Error("the certificate verifies for 127.0.0.1 too, want only the TLS box's address")
	}
	if _, err := tls.LoadX509KeyPair(l.tlsCertFile(), l.tlsKeyFile()); err != nil {
		t.Errorf("drover-target could not load the pair: %v", err)
	}
	for _, f := range []string{"ca.key", "tls.key"} {
		fi, err := os.Stat(filepath.Join(l.tlsDir(), f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	ca, _ := os.ReadFile(l.tlsCAFile())
	if made, err := l.prepareTLS(); err != nil || made {
		t.Errorf("second prepareTLS: made %v, %v; want the files kept", made, err)
	}
	if again, _ := os.ReadFile(l.tlsCAFile()); !bytes.Equal(again, ca) {
		t.Error("the second prepareTLS replaced the CA: users' ca_file would go stale")
	}
	if err := os.WriteFile(l.tlsCertFile(), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if made, err := l.prepareTLS(); err != nil || !made {
		t.Errorf("prepareTLS over a broken certificate: made %v, %v; want new ones", made, err)
	}
}
