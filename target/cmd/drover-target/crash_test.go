package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/internal/storage"
	"github.com/drover/terraform-provider-drover/target/api/wire"
)

// The crash test's volume layout: the written volume is cut into slots, one
// write per slot over the whole test, so that a write that was in flight at
// a kill can never overwrite an acknowledged one.
const (
	crashSeed       = 20261125
	crashIterations = 5
	crashInitiator  = "iqn.2026-11.io.drover.test:crash-writer"
	crashVolume     = "crash"
	crashVolumeMiB  = 64
	slotSize        = 128 << 10
	// Slots 0..pitSlots-1 are written once before the snapshot and once
	// after it, to tell a point-in-time snapshot from a live view.
	pitSlots = 4
)

// TestKillNineWhileWritingLosesNoFlushedWrite runs drover-target as a child
// process, writes numbered blocks to a volume through QEMU's iSCSI
// initiator (qemu-io) with SYNCHRONIZE CACHE and FUA writes while the
// admin API creates, snapshots and deletes other volumes, kills the daemon
// with SIGKILL at a random moment (fixed seed), restarts it on the same data
// directory and checks that
//   - every write acknowledged after a flush (or acknowledged as FUA) reads
//     back with its pattern, over iSCSI and in the backing file;
//   - volumes and snapshots are listed with the same metadata as before,
//     acknowledged API changes are all there, nothing half-made is listed
//     and no file is left that no record claims;
//   - a snapshot taken before the writes still holds its point-in-time
//     content, and so does the volume cloned from it.
//
// It does this crashIterations times on one data directory. A SIGKILL keeps
// the page cache, so this proves the daemon acknowledges only what it has
// handed to the kernel and that its metadata survives any interruption; it
// does not simulate a power cut.
func TestKillNineWhileWritingLosesNoFlushedWrite(t *testing.T) {
	requireTools(t, "qemu-io")
	start := time.Now()
	rng := rand.New(rand.NewPCG(crashSeed, crashSeed))
	d := newDaemon(t)
	ctx := context.Background()
	c := d.start(t)

	// The world before the first crash: the written volume, a point-in-time
	// snapshot of it, a clone of that snapshot, and a volume with CHAP.
	if _, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: crashVolume, SizeMiB: crashVolumeMiB, Initiators: []string{crashInitiator}}); err != nil {
		t.Fatalf("create volume %s: %v", crashVolume, err)
	}
	if _, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{
		Name: "other", SizeMiB: 8, Initiators: []string{"iqn.2026-11.io.drover.test:other"},
		CHAP: &wire.CHAP{User: "other", Secret: "other-secret-1", MutualUser: "target", MutualSecret: "target-secret-2"},
	}); err != nil {
		t.Fatalf("create volume other: %v", err)
	}
	var before, after []write
	for i := 0; i < pitSlots; i++ {
		before = append(before, write{slot: i, off: int64(i) * slotSize, len: slotSize, pattern: byte(0x10 + i)})
		after = append(after, write{slot: i, off: int64(i) * slotSize, len: slotSize, pattern: byte(0x20 + i)})
	}
	mustQemuIO(t, d, crashVolume, writeCommands(before, true))
	snap, err := c.CreateSnapshot(ctx, crashVolume)
	if err == nil {
		snap, err = c.WaitSnapshot(ctx, snap.ID) // copy-before-write on this filesystem
	}
	if err != nil {
		t.Fatalf("snapshot %s: %v", crashVolume, err)
	}
	mustQemuIO(t, d, crashVolume, writeCommands(after, true))
	if _, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: "crash-copy", Source: &wire.Source{Snapshot: snap.ID}, Initiators: []string{crashInitiator}}); err != nil {
		t.Fatalf("clone snapshot %s: %v", snap.ID, err)
	}
	w := worldOf(t, c)

	acked := slices.Clone(after) // every acknowledged, flushed write to crashVolume
	free := rng.Perm(crashVolumeMiB << 20 / slotSize)
	free = slices.DeleteFunc(free, func(s int) bool { return s < pitSlots })
	var stats []string
	for it := 1; it <= crashIterations; it++ {
		wr := startWriter(d, rng.Uint64(), free)
		ch := startChurn(c, it, w)
		t.Cleanup(func() { wr.stop(); ch.stop() }) // if the round fails; stopping twice is fine
		// Kill at a random moment once some writes have been acknowledged,
		// so that every round has something to lose.
		if !wr.waitAcked(6, 30*time.Second) {
			t.Fatalf("round %d: no write acknowledged within 30 s; daemon log:\n%s", it, d.logTail())
		}
		time.Sleep(time.Duration(rng.IntN(400)) * time.Millisecond)
		flushes := d.flushCount(t)
		d.kill(t)
		got, used := wr.stop()
		free = free[used:]
		changes := ch.stop()
		if flushes == 0 {
			t.Fatalf("round %d: the daemon counted no flush before the kill: the writer's SYNCHRONIZE CACHE did not reach it", it)
		}
		acked = append(acked, got...)
		stats = append(stats, fmt.Sprintf("round %d: %d flushed writes, %d API changes, %d in flight", it, len(got), changes.count(), changes.inFlight()))

		c = d.start(t)
		w = checkWorld(t, it, c, d, w, changes)
		checkWrites(t, it, d, acked)
		checkSnapshot(t, it, c, d, snap, before)
	}
	d.stop(t)
	t.Logf("%d kill -9 rounds in %s, seed %d, %d flushed writes checked in all; %s",
		crashIterations, time.Since(start).Round(time.Millisecond), crashSeed, len(acked), strings.Join(stats, "; "))
}

// write is one SCSI write of pattern over [off, off+len) of crashVolume.
type write struct {
	slot    int
	off     int64
	len     int
	pattern byte
}

// writeCommands turns writes into qemu-io commands ending in a flush; with
// fua, the last write instead goes as a FUA write after the flush.
func writeCommands(ws []write, fua bool) []string {
	var cmds []string
	for i, w := range ws {
		if fua && i == len(ws)-1 {
			cmds = append(cmds, "flush", fmt.Sprintf("write -f -P 0x%02x %d %d", w.pattern, w.off, w.len))
			continue
		}
		cmds = append(cmds, fmt.Sprintf("write -P 0x%02x %d %d", w.pattern, w.off, w.len))
	}
	if !fua {
		cmds = append(cmds, "flush")
	}
	return cmds
}

// writer runs qemu-io batches (two writes, SYNCHRONIZE CACHE, one FUA write)
// until stopped, and keeps the writes of every batch that finished cleanly.
type writer struct {
	cancel context.CancelFunc
	done   chan struct{}
	used   int // slots taken from free, acknowledged or not; read after done

	mu    sync.Mutex // guards acked
	acked []write
}

// startWriter writes to the slots in free, in order; the write sizes come
// from a generator seeded with seed.
func startWriter(d *daemon, seed uint64, free []int) *writer {
	ctx, cancel := context.WithCancel(context.Background())
	wr := &writer{cancel: cancel, done: make(chan struct{})}
	rng := rand.New(rand.NewPCG(seed, seed))
	go func() {
		defer close(wr.done)
		for len(free)-wr.used >= 3 {
			var b []write
			for _, slot := range free[wr.used : wr.used+3] {
				n := []int{4 << 10, 64 << 10, slotSize}[rng.IntN(3)]
				b = append(b, write{slot: slot, off: int64(slot) * slotSize, len: n, pattern: byte(1 + slot%255)})
			}
			// A batch cut short by the kill may have landed in part: its
			// slots are never written again.
			wr.used += 3
			out, err := d.qemuIO(ctx, crashVolume, writeCommands(b, true))
			if ctx.Err() != nil {
				return
			}
			if err != nil || strings.Contains(out, "failed") || strings.Count(out, "wrote ") != len(b) {
				continue // not acknowledged as a whole: nothing is promised
			}
			wr.mu.Lock()
			wr.acked = append(wr.acked, b...)
			wr.mu.Unlock()
		}
	}()
	return wr
}

func (wr *writer) waitAcked(n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		wr.mu.Lock()
		got := len(wr.acked)
		wr.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-wr.done:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return false
}

// stop kills the batch in flight (its qemu-io would retry forever against
// the dead daemon) and returns the acknowledged writes and the number of
// slots used.
func (wr *writer) stop() ([]write, int) {
	wr.cancel()
	<-wr.done
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return wr.acked, wr.used
}

// churn changes metadata through the API while the writer runs: it
// creates small volumes, snapshots "other" and deletes what it created.
type churn struct {
	cancel context.CancelFunc
	done   chan struct{}
	res    changes
}

// changes records what the API acknowledged and what was in flight when
// the daemon died (which may or may not have happened).
type changes struct {
	created  map[string]wire.Volume
	deleted  map[string]bool
	snaps    map[string]wire.Snapshot
	unsure   map[string]bool // volume names
	snapRisk bool            // a snapshot request was in flight
	// fences put and lifted, and the initiator whose PUT or DELETE was in
	// flight
	fences    map[string]wire.Fence
	unfenced  map[string]bool
	fenceRisk map[string]bool
}

func (c changes) count() int {
	return len(c.created) + len(c.deleted) + len(c.snaps) + len(c.fences) + len(c.unfenced)
}

func (c changes) inFlight() int {
	n := len(c.unsure) + len(c.fenceRisk)
	if c.snapRisk {
		n++
	}
	return n
}

func startChurn(c *storage.Client, round int, w world) *churn {
	ctx, cancel := context.WithCancel(context.Background())
	ch := &churn{cancel: cancel, done: make(chan struct{}), res: changes{
		created: map[string]wire.Volume{}, deleted: map[string]bool{}, snaps: map[string]wire.Snapshot{}, unsure: map[string]bool{},
		fences: map[string]wire.Fence{}, unfenced: map[string]bool{}, fenceRisk: map[string]bool{},
	}}
	// Volumes left by earlier rounds are deleted first; then create,
	// snapshot, delete in turn.
	var old []string
	for name := range w.volumes {
		if strings.HasPrefix(name, "churn-") {
			old = append(old, name)
		}
	}
	slices.Sort(old)
	// definite reports whether err is an answer of the daemon (so the
	// request did or did not happen) rather than a lost connection.
	definite := func(err error) bool {
		var apiErr *storage.Error
		return err == nil || errors.As(err, &apiErr)
	}
	go func() {
		defer close(ch.done)
		r := &ch.res
		for _, name := range old {
			err := c.DeleteVolume(ctx, name, false)
			if !definite(err) {
				r.unsure[name] = true
				return
			}
			if err == nil {
				r.deleted[name] = true
			}
		}
		for n := 1; ctx.Err() == nil; n++ {
			name := fmt.Sprintf("churn-%d-%d", round, n)
			v, err := c.CreateVolume(ctx, wire.CreateVolumeRequest{Name: name, SizeMiB: 1, Initiators: []string{crashInitiator}})
			if !definite(err) {
				r.unsure[name] = true
				return
			}
			if err == nil {
				r.created[name] = v
			}
			initiator := "iqn.2026-11.io.drover.crash:" + name
			f, err := c.Fence(ctx, initiator, fmt.Sprintf("round %d", round))
			if !definite(err) {
				r.fenceRisk[initiator] = true
				return
			}
			if err == nil {
				r.fences[initiator] = f
			}
			s, err := c.CreateSnapshot(ctx, "other")
			if err == nil {
				// Acknowledged means usable: a copy-before-write
				// snapshot cut short by the kill is dropped.
				s, err = c.WaitSnapshot(ctx, s.ID)
			}
			if !definite(err) {
				r.snapRisk = true
				return
			}
			if err == nil {
				r.snaps[s.ID] = s
			}
			if n%2 == 0 {
				err := c.DeleteVolume(ctx, name, false)
				if !definite(err) {
					r.unsure[name] = true
					return
				}
				if err == nil {
					delete(r.created, name)
					r.deleted[name] = true
				}
				err = c.Unfence(ctx, initiator)
				if !definite(err) {
					r.fenceRisk[initiator] = true
					return
				}
				if err == nil {
					delete(r.fences, initiator)
					r.unfenced[initiator] = true
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return ch
}

func (ch *churn) stop() changes {
	ch.cancel()
	<-ch.done
	return ch.res
}

// world is the metadata the daemon reports: volumes, their snapshots and
// the fences.
type world struct {
	volumes   map[string]wire.Volume
	snapshots map[string]wire.Snapshot
	fences    map[string]wire.Fence
}

func worldOf(t *testing.T, c *storage.Client) world {
	t.Helper()
	ctx := context.Background()
	vols, err := c.ListVolumes(ctx)
	if err != nil {
		t.Fatalf("list volumes: %v", err)
	}
	fences, err := c.Fences(ctx)
	if err != nil {
		t.Fatalf("list fences: %v", err)
	}
	w := world{volumes: map[string]wire.Volume{}, snapshots: map[string]wire.Snapshot{}, fences: map[string]wire.Fence{}}
	for _, f := range fences {
		w.fences[f.Initiator] = f
	}
	for _, v := range vols {
		w.volumes[v.Name] = v
		snaps, err := c.ListSnapshots(ctx, v.Name)
		if err != nil {
			t.Fatalf("list snapshots of %s: %v", v.Name, err)
		}
		for _, s := range snaps {
			w.snapshots[s.ID] = s
		}
	}
	return w
}

// checkWorld compares the restarted daemon's metadata with the world
// before the round plus the round's acknowledged changes, allows exactly
// the changes that were in flight to have happened or not (fences too), and checks
// that the data directory holds one file per listed volume and snapshot.
func checkWorld(t *testing.T, round int, c *storage.Client, d *daemon, prev world, ch changes) world {
	t.Helper()
	got := worldOf(t, c)
	want := world{volumes: map[string]wire.Volume{}, snapshots: map[string]wire.Snapshot{}, fences: map[string]wire.Fence{}}
	for k, f := range prev.fences {
		if !ch.unfenced[k] {
			want.fences[k] = f
		}
	}
	for k, f := range ch.fences {
		want.fences[k] = f
	}
	for k := range ch.fenceRisk { // the request in flight happened or not
		if f, ok := got.fences[k]; ok && f.Reason == fmt.Sprintf("round %d", round) {
			want.fences[k] = f
		} else {
			delete(want.fences, k)
		}
	}
	if !reflect.DeepEqual(got.fences, want.fences) {
		t.Errorf("round %d: fences after the restart:\n got %+v\nwant %+v", round, got.fences, want.fences)
	}
	for k, v := range prev.volumes {
		if !ch.deleted[k] {
			want.volumes[k] = v
		}
	}
	for k, v := range ch.created {
		want.volumes[k] = v
	}
	for k, s := range prev.snapshots {
		want.snapshots[k] = s
	}
	for k, s := range ch.snaps {
		want.snapshots[k] = s
	}
	for name := range ch.unsure {
		v, ok := got.volumes[name]
		switch old, known := prev.volumes[name]; {
		case !ok:
			delete(want.volumes, name) // the request in flight deleted it, or never created it
		case known:
			want.volumes[name] = old // the delete in flight did not happen
		default:
			if v.SizeMiB != 1 || !slices.Equal(v.Initiators, []string{crashInitiator}) {
				t.Errorf("round %d: volume %s, created while the daemon died, came back as %+v, want 1 MiB for %s", round, name, v, crashInitiator)
			}
			want.volumes[name] = v
		}
	}
	if ch.snapRisk {
		for id, s := range got.snapshots {
			if _, ok := want.snapshots[id]; !ok && s.Volume == "other" {
				want.snapshots[id] = s // the snapshot in flight committed
				break
			}
		}
	}
	for name, v := range want.volumes {
		if g, ok := got.volumes[name]; !ok {
			t.Errorf("round %d: volume %s is gone after the restart, want %+v", round, name, v)
		} else if !reflect.DeepEqual(g, v) {
			t.Errorf("round %d: volume %s after the restart:\n got %+v\nwant %+v", round, name, g, v)
		}
	}
	for name, v := range got.volumes {
		if _, ok := want.volumes[name]; !ok {
			t.Errorf("round %d: volume %s appeared after the restart (%+v); nothing created it", round, name, v)
		}
	}
	for id, s := range want.snapshots {
		if g, ok := got.snapshots[id]; !ok {
			t.Errorf("round %d: snapshot %s is gone after the restart, want %+v", round, id, s)
		} else if !reflect.DeepEqual(g, s) {
			t.Errorf("round %d: snapshot %s after the restart:\n got %+v\nwant %+v", round, id, g, s)
		}
	}
	for id, s := range got.snapshots {
		if _, ok := want.snapshots[id]; !ok {
			t.Errorf("round %d: snapshot %s appeared after the restart (%+v); nothing created it", round, id, s)
		}
	}
	// One backing file per record, of the recorded size, and no other.
	var wantFiles, gotFiles []string
	for name, v := range got.volumes {
		wantFiles = append(wantFiles, "volumes/"+name+".raw")
		if fi, err := os.Stat(filepath.Join(d.data, "volumes", name+".raw")); err != nil || fi.Size() != v.SizeMiB<<20 {
			t.Errorf("round %d: backing file of %s: got %v (err %v), want %d bytes", round, name, fi, err, v.SizeMiB<<20)
		}
	}
	for id := range got.snapshots {
		wantFiles = append(wantFiles, "snapshots/"+id+".raw")
	}
	for _, sub := range []string{"volumes", "snapshots"} {
		entries, err := os.ReadDir(filepath.Join(d.data, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			gotFiles = append(gotFiles, sub+"/"+e.Name())
		}
	}
	slices.Sort(wantFiles)
	slices.Sort(gotFiles)
	if !slices.Equal(gotFiles, wantFiles) {
		t.Errorf("round %d: files in the data directory:\n got %v\nwant %v (one per listed volume and snapshot)", round, gotFiles, wantFiles)
	}
	return got
}

// checkWrites reads every acknowledged write back through iSCSI (qemu-io
// verifies the pattern) and from the backing file.
func checkWrites(t *testing.T, round int, d *daemon, acked []write) {
	t.Helper()
	var cmds []string
	for _, w := range acked {
		cmds = append(cmds, fmt.Sprintf("read -P 0x%02x %d %d", w.pattern, w.off, w.len))
	}
	out, err := d.qemuIO(context.Background(), crashVolume, cmds)
	if err != nil || strings.Contains(out, "failed") || strings.Count(out, "read ") != len(acked) {
		t.Errorf("round %d: reading %d flushed writes back over iSCSI: err %v, output:\n%s", round, len(acked), err, firstLines(out, 20))
	}
	f, err := os.Open(filepath.Join(d.data, "volumes", crashVolume+".raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bad := 0
	for _, w := range acked {
		b := make([]byte, w.len)
		if _, err := f.ReadAt(b, w.off); err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(b, func(c byte) bool { return c != w.pattern }); i >= 0 {
			if bad++; bad <= 5 {
				t.Errorf("round %d: backing file at %d: got byte %#x, want the flushed pattern %#x over %d bytes from %d", round, w.off+int64(i), b[i], w.pattern, w.len, w.off)
			}
		}
	}
}

// checkSnapshot checks that the snapshot and its clone still hold the
// content of the volume at snapshot time, not what was written after.
func checkSnapshot(t *testing.T, round int, c *storage.Client, d *daemon, snap wire.Snapshot, before []write) {
	t.Helper()
	rc, err := c.DownloadSnapshot(context.Background(), snap.ID)
	if err != nil {
		t.Fatalf("round %d: download snapshot %s: %v", round, snap.ID, err)
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatalf("round %d: download snapshot %s: %v", round, snap.ID, err)
	}
	clone, err := os.ReadFile(filepath.Join(d.data, "volumes", "crash-copy.raw"))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"snapshot " + snap.ID: data, "clone crash-copy": clone} {
		if len(b) != crashVolumeMiB<<20 {
			t.Errorf("round %d: %s is %d bytes, want %d", round, name, len(b), crashVolumeMiB<<20)
			continue
		}
		for _, w := range before {
			if got := b[w.off : w.off+int64(w.len)]; !bytes.Equal(got, bytes.Repeat([]byte{w.pattern}, w.len)) {
				t.Errorf("round %d: %s at %d: want the pattern %#x written before the snapshot", round, name, w.off, w.pattern)
			}
		}
		zero := make([]byte, slotSize)
		for off := pitSlots * slotSize; off < len(b); off += slotSize {
			if !bytes.Equal(b[off:off+slotSize], zero) {
				t.Errorf("round %d: %s has data at %d, written after it was taken", round, name, off)
				break
			}
		}
	}
}

// daemon is drover-target as a child process on a data directory that
// outlives its restarts. It listens on port 0 and reports its addresses in
// its log.
type daemon struct {
	bin, dir, data, token string
	starts                int

	cmd      *exec.Cmd
	exited   chan struct{}
	log      string // current log file
	apiURL   string
	portal   string
	tokenVal string
}

func newDaemon(t *testing.T) *daemon {
	t.Helper()
	dir := t.TempDir()
	d := &daemon{bin: filepath.Join(dir, "drover-target"), dir: dir, data: filepath.Join(dir, "data"), token: filepath.Join(dir, "token"), tokenVal: "crash-test-token-0123456789"}
	build := exec.Command("go", "build", "-o", d.bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build drover-target: %v\n%s", err, out)
	}
	if err := os.WriteFile(d.token, []byte(d.tokenVal+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.cmd != nil {
			d.cmd.Process.Kill()
			<-d.exited
		}
	})
	return d
}

var (
	iscsiAddrRE = regexp.MustCompile(`msg="iscsi listening".* addr=(\S+)`)
	apiAddrRE   = regexp.MustCompile(`msg="drover-target started".* api=(\S+)`)
)

// start starts the daemon and waits until it reports both addresses.
func (d *daemon) start(t *testing.T) *storage.Client {
	t.Helper()
	d.starts++
	d.log = filepath.Join(d.dir, fmt.Sprintf("daemon-%d.log", d.starts))
	logf, err := os.Create(d.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	d.cmd = exec.Command(d.bin, "serve", "--data-dir", d.data, "--token-file", d.token,
		"--iscsi-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0")
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// If the test binary dies, so does the daemon.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start drover-target: %v", err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(d.cmd, d.exited)

	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(d.log)
		i, a := iscsiAddrRE.FindSubmatch(b), apiAddrRE.FindSubmatch(b)
		if i != nil && a != nil {
			d.portal, d.apiURL = string(i[1]), string(a[1])
			break
		}
		select {
		case <-d.exited:
			t.Fatalf("drover-target exited at start %d:\n%s", d.starts, b)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("drover-target did not report its addresses within 20 s:\n%s", b)
		}
	}
	c, err := storage.New(d.apiURL, d.tokenVal)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Health(context.Background()); err != nil {
		t.Fatalf("health after start %d: %v", d.starts, err)
	}
	return c
}

// kill sends SIGKILL to the daemon (by its PID) and waits for it to die.
func (d *daemon) kill(t *testing.T) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill drover-target: %v", err)
	}
	<-d.exited
	d.cmd = nil
}

// stop stops the daemon with SIGTERM, as systemd does, and expects a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		if !d.cmd.ProcessState.Success() {
			t.Errorf("drover-target exited with %v after SIGTERM:\n%s", d.cmd.ProcessState, d.logTail())
		}
	case <-time.After(15 * time.Second):
		t.Errorf("drover-target did not stop within 15 s of SIGTERM")
		d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
}

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.log)
	return firstLines(string(b[max(0, len(b)-4000):]), 60)
}

// flushCount reads drover_iscsi_operations_total{op="flush"} of the written volume.
func (d *daemon) flushCount(t *testing.T) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.apiURL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+d.tokenVal)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`drover_iscsi_operations_total\{op="flush",volume="` + crashVolume + `"\} (\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("GET /metrics: no flush counter for %s in:\n%s", crashVolume, firstLines(string(b), 40))
	}
	var n float64
	fmt.Sscan(string(m[1]), &n)
	return n
}

// qemuIO runs qemu-io commands against a volume through QEMU's libiscsi
// initiator. The context kills it (SIGKILL): against a dead target it would
// retry forever.
func (d *daemon) qemuIO(ctx context.Context, volume string, cmds []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	opts := fmt.Sprintf("driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=%s,file.target=iqn.2026-11.io.drover:%s,file.lun=0,file.initiator-name=%s",
		d.portal, volume, crashInitiator)
	args := []string{"--image-opts", "-n"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	cmd := exec.CommandContext(ctx, "qemu-io", append(args, opts)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func mustQemuIO(t *testing.T, d *daemon, volume string, cmds []string) {
	t.Helper()
	out, err := d.qemuIO(context.Background(), volume, cmds)
	if err != nil || strings.Contains(out, "failed") {
		t.Fatalf("qemu-io %s: %v\n%s", strings.Join(cmds, "; "), err, out)
	}
}

func requireTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed (Debian: qemu-utils and qemu-block-extra); `make deps` installs it", n)
		}
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	return strings.Join(lines, "\n")
}
