package hypervisor

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/cloudinit"
	"github.com/drover/terraform-provider-drover/internal/lab"
	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"libvirt.org/go/libvirt"
	"libvirt.org/go/libvirtxml"
)

// labCHAPSecret is the CHAP secret the lab tests give their volumes and
// both hosts.
const labCHAPSecret = "drover-lab-chap-secret"

// labEnv is the lab as the VM tests use it: both hosts, the storage box, and
// the CHAP secret set on both hosts.
type labEnv struct {
	info  lab.Info
	pool  *Pool
	store *storage.Client
	hosts map[string]string // name → URI
	root  string            // repository root
}

func newLabEnv(t *testing.T, ctx context.Context) *labEnv {
	t.Helper()
	info := labInfo(t)
	store, err := storage.New(info.StorageEndpoint, info.StorageToken)
	if err != nil {
		t.Fatal(err)
	}
	root, err := lab.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	env := &labEnv{info: info, pool: NewPool(Options{}), store: store, hosts: info.HostURIs(), root: root}
	t.Cleanup(func() { env.pool.Close() })
	for name, uri := range env.hosts {
		if err := env.pool.EnsureCHAPSecret(ctx, uri, labCHAPSecret); err != nil {
			t.Fatalf("host %s: %v", name, err)
		}
	}
	return env
}

// volume creates a volume that both hosts may open with CHAP, and deletes
// it (forced) when the test ends.
func (e *labEnv) volume(t *testing.T, ctx context.Context, name string, sizeMiB int64) wire.Volume {
	t.Helper()
	_ = e.store.DeleteVolume(ctx, name, true) // a leftover of an interrupted run
	v, err := e.store.CreateVolume(ctx, wire.CreateVolumeRequest{
		Name:       name,
		SizeMiB:    sizeMiB,
		Initiators: []string{HostInitiator("alpha"), HostInitiator("beta")},
		CHAP:       &wire.CHAP{User: CHAPUser, Secret: labCHAPSecret},
	})
	if err != nil {
		t.Fatalf("create volume %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := e.store.DeleteVolume(ctx, name, true); err != nil && !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("clean up volume %s: %v", name, err)
		}
	})
	return v
}

// guest returns the lab guest as a VM on alpha, with a console log of its
// own, and removes it from both hosts when the test ends (before the
// volumes go, since cleanups run last-in first-out).
func (e *labEnv) guest(t *testing.T, ctx context.Context, name string, disks ...wire.Volume) VM {
	t.Helper()
	remove := func(ctx context.Context) {
		for host, uri := range e.hosts {
			if err := e.pool.Remove(ctx, uri, name); err != nil {
				t.Errorf("clean up %s on %s: %v", name, host, err)
			}
		}
	}
	remove(ctx)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		remove(ctx)
	})
	vm := VM{
		Name:         name,
		Type:         "qemu",
		MemoryMiB:    128,
		MaxMemoryMiB: 256,
		VCPUs:        1,
		MaxVCPUs:     2,
		Storage:      Storage{Portal: e.info.StoragePortal, Initiator: HostInitiator("alpha"), CHAP: true},
		Boot:         Boot{Kernel: e.info.GuestKernel, Initrd: e.info.GuestInitrd, Cmdline: "console=ttyS0 no_timer_check"},
		ConsoleLog:   filepath.Join(t.TempDir(), "console.log"),
		Placement:    Placement{Host: "alpha"},
	}
	for _, d := range disks {
		vm.Disks = append(vm.Disks, Disk{Volume: d.Name, IQN: d.IQN, LUN: d.LUN})
	}
	return vm
}

var recordLine = regexp.MustCompile(`drover-guest: record seq=(\d+) sum=([0-9a-f]{32}) disk=vda`)

// consoleRecords returns the sequence numbers of the records the guest
// printed, in console order.
func consoleRecords(t *testing.T, console string) []int {
	t.Helper()
	b, _ := os.ReadFile(console)
	var seqs []int
	for _, m := range recordLine.FindAllSubmatch(b, -1) {
		n, _ := strconv.Atoi(string(m[1]))
		seqs = append(seqs, n)
	}
	return seqs
}

// waitRecords waits until the guest has printed a record numbered at least
// min and returns every record number printed so far.
func waitRecords(t *testing.T, console string, min int, timeout time.Duration) []int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		seqs := consoleRecords(t, console)
		if len(seqs) > 0 && slices.Max(seqs) >= min {
			return seqs
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(console)
			t.Fatalf("console %s: no record seq>=%d after %s; records %v; console tail:\n%s",
				console, min, timeout, seqs, tail(b, 1500))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// waitConsole waits until the console shows a line matching re and returns
// its submatches.
func waitConsole(t *testing.T, console string, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(console)
		if m := re.FindStringSubmatch(string(b)); m != nil {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("console %s: nothing matches %q after %s; console tail:\n%s", console, re, timeout, tail(b, 1500))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

var diskRecord = regexp.MustCompile(`DROVER seq=(\d+) sum=([0-9a-f]{32})`)

// diskRecords returns the numbers of the valid records (checksum right) in
// the guest's ring at the start of a disk image.
func diskRecords(image []byte) map[int]bool {
	const ring = 1024 * 512
	if len(image) > ring {
		image = image[:ring]
	}
	out := map[int]bool{}
	for _, m := range diskRecord.FindAllSubmatch(image, -1) {
		sum := md5.Sum([]byte("seq=" + string(m[1])))
		if hex.EncodeToString(sum[:]) != string(m[2]) {
			continue
		}
		n, _ := strconv.Atoi(string(m[1]))
		out[n] = true
	}
	return out
}

// checkConsecutive fails unless seqs count up by one, with no gap and no
// repeat.
func checkConsecutive(t *testing.T, seqs []int) {
	t.Helper()
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Errorf("record seq=%d follows seq=%d on the console, want seq=%d (all: %v)", seqs[i], seqs[i-1], seqs[i-1]+1, seqs)
			return
		}
	}
}

// ISSUE 3: the lab guest's disk is a drover-target volume; its writes land in
// the volume's backing file, and a second QEMU initiator reads the same
// records while the guest runs.
func TestAccGuestDiskIsADroverTargetVolumeThatTwoInitiatorsOpen(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := newLabEnv(t, ctx)
	vol := env.volume(t, ctx, "drover-test-shared", 8)
	vm := env.guest(t, ctx, "drover-test-shared", vol)

	start := time.Now()
	if _, err := env.pool.CreateVM(ctx, env.hosts["alpha"], vm); err != nil {
		t.Fatal(err)
	}
	seqs := waitRecords(t, vm.ConsoleLog, 3, 2*time.Minute)
	t.Logf("guest wrote record %d within %s of start", slices.Max(seqs), time.Since(start).Round(time.Second))

	// The backing file on the storage box holds the records the console
	// printed (the guest syncs every record; the target writes through).
	backing := filepath.Join(env.root, ".lab", "target", "data", "volumes", vol.Name+".raw")
	image, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	onFile := diskRecords(image)
	for _, n := range seqs {
		if !onFile[n] {
			t.Errorf("record seq=%d is on the console but not (valid) in %s", n, backing)
		}
	}

	// A second QEMU initiator, with beta's IQN and the CHAP secret, reads
	// the volume while alpha's QEMU has it open.
	printed := consoleRecords(t, vm.ConsoleLog)
	copied, err := readVolume(t, ctx, env, vol, HostInitiator("beta"))
	if err != nil {
		t.Fatal(err)
	}
	onCopy := diskRecords(copied)
	for _, n := range printed {
		if !onCopy[n] {
			t.Errorf("record seq=%d is on the console but not in what the second initiator read", n)
		}
	}
	if d, found, err := env.pool.Domain(ctx, env.hosts["alpha"], vm.Name); err != nil || !found || d.State != StateRunning {
		t.Errorf("guest on alpha after the second initiator read: %+v, found %v, %v; want running", d, found, err)
	}
	sessions, err := env.store.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !hasSession(sessions, vol.Name, HostInitiator("alpha")) {
		t.Errorf("sessions %+v lack alpha's initiator on %s while the guest runs", sessions, vol.Name)
	}
	// The allow-list is what let it in: an initiator not on it is refused.
	if _, err := readVolume(t, ctx, env, vol, HostInitiator("stranger")); err == nil {
		t.Error("an initiator that is not on the volume's allow-list read it")
	}
	after := waitRecords(t, vm.ConsoleLog, slices.Max(printed)+2, time.Minute)
	checkConsecutive(t, after)
	t.Logf("second initiator read %d valid records; guest went on to seq=%d", len(onCopy), slices.Max(after))
}

// readVolume copies a volume through QEMU's own iSCSI initiator (qemu-img,
// the same libiscsi code as the guests' QEMU), logging in as initiator with
// CHAP, and returns its content.
func readVolume(t *testing.T, ctx context.Context, env *labEnv, vol wire.Volume, initiator string) ([]byte, error) {
	t.Helper()
	dir := t.TempDir()
	secret := filepath.Join(dir, "chap")
	if err := os.WriteFile(secret, []byte(labCHAPSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(env.info.StoragePortal, ":")
	out := filepath.Join(dir, "copy.raw")
	opts := fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s:%s,target=%s,lun=%d,initiator-name=%s,user=%s,password-secret=chap",
		host, port, vol.IQN, vol.LUN, initiator, CHAPUser)
	cmd := exec.CommandContext(ctx, "qemu-img", "convert",
		"--object", "secret,id=chap,file="+secret,
		"--image-opts", opts, "-O", "raw", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("qemu-img as initiator %s: %v\n%s", initiator, err, b)
	}
	return os.ReadFile(out)
}

func hasSession(sessions []wire.Session, volume, initiator string) bool {
	for _, s := range sessions {
		if s.Volume == volume && s.Initiator == initiator {
			return true
		}
	}
	return false
}

var instanceLine = regexp.MustCompile(`drover-guest: instance-id=(\S+)`)

// A guest with its disk and its cloud-init seed on the storage box moves
// live from alpha to beta; beta's QEMU logs in with beta's initiator, and
// the guest's records go on with no gap.
func TestAccGuestWithSeedMovesLiveToBetaWithBetasInitiator(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := newLabEnv(t, ctx)
	disk := env.volume(t, ctx, "drover-test-move", 8)
	seedVol := env.volume(t, ctx, "drover-test-move-seed", 1)

	const instanceID = "drover-test-move-1"
	seed, err := cloudinit.Seed{
		UserData: "#cloud-config\n",
		MetaData: "instance-id: " + instanceID + "\nlocal-hostname: drover-test-move\n",
	}.Image()
	if err != nil {
		t.Fatal(err)
	}
	if err := env.store.UploadVolume(ctx, seedVol.Name, bytes.NewReader(seed), "raw"); err != nil {
		t.Fatal(err)
	}

	vm := env.guest(t, ctx, "drover-test-move", disk)
	vm.CloudInit = &CDROM{Volume: seedVol.Name, IQN: seedVol.IQN, LUN: seedVol.LUN}
	created, err := env.pool.CreateVM(ctx, env.hosts["alpha"], vm)
	if err != nil {
		t.Fatal(err)
	}
	if got := waitConsole(t, vm.ConsoleLog, instanceLine, 2*time.Minute)[1]; got != instanceID {
		t.Errorf("guest saw instance-id %q, want %q", got, instanceID)
	}
	before := waitRecords(t, vm.ConsoleLog, 3, time.Minute)

	start := time.Now()
	err = env.pool.Migrate(ctx, vm.Name, env.hosts["alpha"], env.hosts["beta"], MigrateOptions{Initiator: HostInitiator("beta")})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("migrated after record %d in %s", slices.Max(before), time.Since(start).Round(time.Millisecond))

	locs, err := env.pool.Locate(ctx, env.hosts, created.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if len(locs) != 1 || locs[0].Host != "beta" || locs[0].Domain.State != StateRunning {
		t.Fatalf("after the migration the guest is at %+v, want running on beta only", locs)
	}
	moved, _, err := env.pool.ReadVM(ctx, env.hosts["beta"], created.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if moved.Storage.Initiator != HostInitiator("beta") {
		t.Errorf("beta's definition logs in as %s, want %s", moved.Storage.Initiator, HostInitiator("beta"))
	}
	if moved.CloudInit == nil || moved.CloudInit.Volume != seedVol.Name || moved.Disks[0].Volume != disk.Name {
		t.Errorf("beta's definition lost the volume names: disks %+v, seed %+v", moved.Disks, moved.CloudInit)
	}
	if moved.Placement.Host != "alpha" || !moved.Managed {
		t.Errorf("beta's definition lost Drover's metadata: placement %+v, managed %v", moved.Placement, moved.Managed)
	}

	after := waitRecords(t, vm.ConsoleLog, slices.Max(before)+3, time.Minute)
	checkConsecutive(t, after)
	b, _ := os.ReadFile(vm.ConsoleLog)
	if n := strings.Count(string(b), "drover-guest: booted kernel"); n != 1 {
		t.Errorf("the guest booted %d times, want once (a migration is no reboot)", n)
	}
	sessions, err := env.store.Sessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !hasSession(sessions, disk.Name, HostInitiator("beta")) {
		t.Errorf("sessions %+v lack beta's initiator on %s", sessions, disk.Name)
	}
	t.Logf("records %d..%d on the console with no gap across the move", after[0], after[len(after)-1])
}

var resizeLine = regexp.MustCompile(`drover-guest: disk vda resized from (\d+) to (\d+) sectors`)

// A running guest sees its disk grow after the volume grows on the target,
// and gets memory and a vCPU live, without a restart.
func TestAccRunningGuestGetsABiggerDiskMemoryAndVCPUsLive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := newLabEnv(t, ctx)
	vol := env.volume(t, ctx, "drover-test-grow", 8)
	vm := env.guest(t, ctx, "drover-test-grow", vol)
	alpha := env.hosts["alpha"]
	if _, err := env.pool.CreateVM(ctx, alpha, vm); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, vm.ConsoleLog, 2, 2*time.Minute)

	if _, err := env.store.GrowVolume(ctx, vol.Name, 16); err != nil {
		t.Fatal(err)
	}
	resized, err := env.pool.ResizeDisks(ctx, env.hosts, vol.IQN, vol.LUN, 16)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Resized{{Host: "alpha", VM: vm.Name, Target: "vda"}}; !slices.Equal(resized, want) {
		t.Errorf("ResizeDisks = %+v, want %+v", resized, want)
	}
	m := waitConsole(t, vm.ConsoleLog, resizeLine, time.Minute)
	if m[1] != "16384" || m[2] != "32768" {
		t.Errorf("guest saw vda go from %s to %s sectors, want 16384 to 32768", m[1], m[2])
	}

	if err := env.pool.SetMemory(ctx, alpha, vm.Name, 256); err != nil {
		t.Fatal(err)
	}
	if err := env.pool.SetVCPUs(ctx, alpha, vm.Name, 2); err != nil {
		t.Fatal(err)
	}
	var d Domain
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if d, _, err = env.pool.Domain(ctx, alpha, vm.Name); err != nil {
			t.Fatal(err)
		}
		if d.MemoryMiB == 256 && d.VCPUs == 2 {
			break
		}
	}
	if d.MemoryMiB != 256 || d.VCPUs != 2 {
		t.Errorf("running guest has %d MiB and %d vcpus, want 256 MiB and 2", d.MemoryMiB, d.VCPUs)
	}
	if err := env.pool.SetMemory(ctx, alpha, vm.Name, 512); err == nil {
		t.Error("memory past the maximum was set live")
	}
	defined, _, err := env.pool.ReadVM(ctx, alpha, vm.Name)
	if err != nil {
		t.Fatal(err)
	}
	if defined.MemoryMiB != 256 || defined.VCPUs != 2 {
		t.Errorf("definition has %d MiB and %d vcpus, want 256 MiB and 2 (it boots with them next)", defined.MemoryMiB, defined.VCPUs)
	}
	seqs := consoleRecords(t, vm.ConsoleLog)
	after := waitRecords(t, vm.ConsoleLog, slices.Max(seqs)+2, time.Minute)
	checkConsecutive(t, after)
}

// A UEFI VM gets its loader and NVRAM from libvirt's firmware
// autoselection, reads back as UEFI, and its NVRAM goes with it.
func TestAccUEFIVMGetsFirmwareFromTheHostAndLeavesNoNVRAM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := newLabEnv(t, ctx)
	vm := env.guest(t, ctx, "drover-test-uefi")
	vm.Boot = Boot{Firmware: FirmwareUEFI}
	alpha := env.hosts["alpha"]
	d, err := env.pool.CreateVM(ctx, alpha, vm)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := env.pool.ReadVM(ctx, alpha, d.UUID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Boot.Firmware != FirmwareUEFI {
		t.Errorf("firmware read back = %q, want uefi", got.Boot.Firmware)
	}
	var nvram string
	err = env.pool.onDomain(ctx, alpha, d.UUID, func(dom *libvirt.Domain) error {
		// libvirt picks the firmware when the VM starts: the running
		// domain's XML names the files.
		xml, err := dom.GetXMLDesc(0)
		if err != nil {
			return err
		}
		var def libvirtxml.Domain
		if err := def.Unmarshal(xml); err != nil {
			return err
		}
		if def.OS.NVRam != nil {
			nvram = def.OS.NVRam.NVRam
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if nvram == "" {
		t.Fatal("libvirt gave the UEFI VM no NVRAM file")
	}
	// The host's /var/lib/libvirt is the lab host's own folder.
	onHost := filepath.Join(env.root, ".lab", "hosts", "alpha", "lib", strings.TrimPrefix(nvram, "/var/lib/libvirt/"))
	if _, err := os.Stat(onHost); err != nil {
		t.Fatalf("NVRAM file of the running VM: %v", err)
	}
	forced, err := env.pool.Shutdown(ctx, alpha, d.UUID, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("NVRAM %s; shutdown forced: %v", nvram, forced)
	if err := env.pool.Undefine(ctx, alpha, d.UUID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(onHost); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("NVRAM file %s is still there after Undefine (stat: %v)", onHost, err)
	}
}

var pairLine = regexp.MustCompile(`drover-guest: pair seq=(\d+)`)

// A second disk plugged into a running guest shows up in the guest (it
// starts writing pairs to vdb and vda), in the definition and in the
// metadata; unplugged, it is gone from all three.
func TestAccDiskIsPluggedIntoARunningGuestAndOutAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := newLabEnv(t, ctx)
	root := env.volume(t, ctx, "drover-test-plug", 8)
	data := env.volume(t, ctx, "drover-test-plug-data", 8)
	vm := env.guest(t, ctx, "drover-test-plug", root)
	alpha := env.hosts["alpha"]
	if _, err := env.pool.CreateVM(ctx, alpha, vm); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, vm.ConsoleLog, 2, 2*time.Minute)

	plugged, err := env.pool.AttachDisk(ctx, alpha, vm.Name, vm.Storage, Disk{Volume: data.Name, IQN: data.IQN, LUN: data.LUN})
	if err != nil {
		t.Fatal(err)
	}
	if plugged.Target != "vdb" {
		t.Errorf("plugged disk got target %s, want vdb", plugged.Target)
	}
	waitConsole(t, vm.ConsoleLog, pairLine, time.Minute)
	defined, _, err := env.pool.ReadVM(ctx, alpha, vm.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(defined.Disks) != 2 || defined.Disks[1].Volume != data.Name || defined.Disks[1].Target != "vdb" {
		t.Errorf("definition after the plug has disks %+v, want %s at vdb second", defined.Disks, data.Name)
	}

	if err := env.pool.DetachDisk(ctx, alpha, vm.Name, "vdb"); err != nil {
		t.Fatal(err)
	}
	// Detached means let go of: the volume is no longer in use, and can be
	// deleted at once without force.
	if err := env.store.DeleteVolume(ctx, data.Name, false); err != nil {
		t.Fatalf("delete the unplugged volume right after the detach: %v", err)
	}
	defined, _, err = env.pool.ReadVM(ctx, alpha, vm.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(defined.Disks) != 1 || defined.Disks[0].Volume != root.Name {
		t.Errorf("definition after the unplug has disks %+v, want %s only", defined.Disks, root.Name)
	}
	// Once the guest let go of vdb, it writes single records again.
	b, _ := os.ReadFile(vm.ConsoleLog)
	lastPair := 0
	for _, m := range pairLine.FindAllStringSubmatch(string(b), -1) {
		lastPair, _ = strconv.Atoi(m[1])
	}
	waitRecords(t, vm.ConsoleLog, lastPair+2, time.Minute)
}

// TestAccNICIsPluggedInMovesWithTheGuestAndIsUnplugged uses the lab's
// isolated network "lab", which every lab host has.
func TestAccNICIsPluggedInMovesWithTheGuestAndIsUnplugged(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	env := newLabEnv(t, ctx)
	root := env.volume(t, ctx, "drover-test-nic", 8)
	vm := env.guest(t, ctx, "drover-test-nic", root)
	alpha, beta := env.hosts["alpha"], env.hosts["beta"]

	if err := env.pool.CheckNetworks(ctx, alpha, []NIC{{Network: "nowhere"}}); err == nil || !strings.Contains(err.Error(), "nowhere") {
		t.Errorf("CheckNetworks with a network alpha lacks: got %v, want an error naming it", err)
	}
	if _, err := env.pool.CreateVM(ctx, alpha, vm); err != nil {
		t.Fatal(err)
	}
	waitRecords(t, vm.ConsoleLog, 2, 2*time.Minute)

	nic, err := env.pool.AttachNIC(ctx, alpha, vm.Name, NIC{Network: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	checkNICs := func(uri string, want ...string) {
		t.Helper()
		got, dom, err := env.pool.ReadVM(ctx, uri, vm.Name)
		if err != nil {
			t.Fatal(err)
		}
		var macs []string
		for _, n := range got.NICs {
			macs = append(macs, n.MAC)
		}
		if strings.Join(macs, ",") != strings.Join(want, ",") || dom.State != StateRunning {
			t.Errorf("on %s: NICs %v, state %s; want %v and running", uri, macs, dom.State, want)
		}
	}
	checkNICs(alpha, nic.MAC)

	if err := env.pool.CheckNetworks(ctx, beta, []NIC{nic}); err != nil {
		t.Fatalf("beta lacks the network of the plugged NIC: %v", err)
	}
	if _, err := env.pool.Move(ctx, vm.Name, alpha, beta, MigrateOptions{Initiator: HostInitiator("beta")}); err != nil {
		t.Fatal(err)
	}
	checkNICs(beta, nic.MAC)

	if err := env.pool.DetachNIC(ctx, beta, vm.Name, nic.MAC); err != nil {
		t.Fatal(err)
	}
	checkNICs(beta)
	// The guest kept writing through all of it.
	checkConsecutive(t, waitRecords(t, vm.ConsoleLog, len(consoleRecords(t, vm.ConsoleLog))+2, time.Minute))
}
