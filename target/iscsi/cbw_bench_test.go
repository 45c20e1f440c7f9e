package iscsi

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/store"
)

// BenchmarkWriteLatencyDuringCopy runs qemu-img bench (QEMU's libiscsi
// initiator, 4 KiB writes at queue depth 1, each 1 MiB + 4 KiB after the
// previous one, so that every write lands in a chunk the copy has not
// reached) on a 1 GiB volume with half its MiBs written: with no copy
// running, then just after a copy-before-write snapshot of it is cut
// (the copy running as fast as it can). Rounds alternate; the medians and
// their ratio are reported. DROVER_BENCH=1 (make bench).
//
//	DROVER_BENCH=1 go test -run '^$' -bench WriteLatencyDuringCopy -benchtime 1x ./target/iscsi/
func BenchmarkWriteLatencyDuringCopy(b *testing.B) {
	if os.Getenv("DROVER_BENCH") != "1" {
		b.Skip("set DROVER_BENCH=1 to run (it writes 512 MiB and copies it each round)")
	}
	requireTool(b, "qemu-img")
	st, err := store.Open(b.TempDir(), store.Options{Logger: testLogger(b), NoReflink: true, CopyBeforeWrite: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	e, err := New(Config{Listen: "127.0.0.1:0", Logger: testLogger(b), WriteGuards: st})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	v, err := st.Create(context.Background(), "bench", 1024, store.Access{})
	if err != nil {
		b.Fatal(err)
	}
	halfFill(b, v.Path, 1<<30)
	ex := Export{Name: "bench", IQN: "iqn.2026-11.io.drover:bench", Path: v.Path, Initiators: []string{"iqn.2008-11.org.linux-kvm"}}
	if err := e.Add(ex); err != nil {
		b.Fatal(err)
	}
	const writes = 900 // fewer than 1 GiB / (1 MiB + 4 KiB): each in a chunk of its own
	bench := func() float64 {
		args := []string{"bench", "-n", "-t", "none", "-w", "-c", fmt.Sprint(writes), "-s", "4K", "-S", "1052672", "-d", "1", "--image-opts",
			fmt.Sprintf("driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=%s,file.target=%s,file.lun=0,file.initiator-name=%s", portal(e), ex.IQN, ex.Initiators[0])}
		out, err := runTool(b, 2*time.Minute, "qemu-img", args...)
		if err != nil {
			b.Fatalf("qemu-img %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return benchSeconds(b, out) / writes * 1e6 // µs per write, qemu-img's start-up excluded
	}
	freeze := func(ctx context.Context) (context.Context, func() error, error) {
		h, err := e.Hold(ctx, []string{"bench"}, 10*time.Second)
		if err != nil {
			return nil, nil, err
		}
		return ctx, h.Release, nil
	}
	var idle, copying []float64
	outlasted := 0 // rounds whose writes all ran while the copy did
	for i := 0; i < b.N*3; i++ {
		idle = append(idle, bench())
		snap, err := st.CreateSnapshot(context.Background(), "bench", freeze)
		if err != nil {
			b.Fatal(err)
		}
		copying = append(copying, bench())
		if s, _ := st.GetSnapshot(snap.ID); s.Copying {
			outlasted++
		}
		if _, err := st.WaitCopied(context.Background(), snap.ID); err != nil {
			b.Fatal(err)
		}
		if err := st.DeleteSnapshot(context.Background(), snap.ID); err != nil {
			b.Fatal(err)
		}
	}
	median := func(x []float64) float64 { x = slices.Clone(x); slices.Sort(x); return x[len(x)/2] }
	b.ReportMetric(median(idle), "idle-us/write")
	b.ReportMetric(median(copying), "copying-us/write")
	b.ReportMetric(median(copying)/median(idle), "copying/idle")
	fmt.Printf("4 KiB write over iSCSI (qemu-img bench, qd1), median of %d: %.0f µs idle, %.0f µs while a copy-before-write snapshot copies: ratio %.2f (goal <= 2); the copy outlasted the writes in %d of %d rounds\n",
		len(idle), median(idle), median(copying), median(copying)/median(idle), outlasted, len(idle))
}

// halfFill writes every other MiB of a file of size bytes.
func halfFill(tb testing.TB, path string, size int64) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	for off := int64(0); off < size; off += 2 << 20 {
		if _, err := f.WriteAt(buf, off); err != nil {
			tb.Fatal(err)
		}
	}
}
