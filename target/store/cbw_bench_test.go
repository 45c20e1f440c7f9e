package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"
)

// BenchmarkSnapshotPause cuts a snapshot set of two 1 GiB volumes with half
// of each written (every other MiB) three ways, through the store with a
// freeze around the cut as the API makes it (nobody writes here, so there
// is nothing to drain), and reports how long writes were held for each cut
// (hold-ms/op, the pause a guest sees) and the time per set until it is
// usable (copied-ms/op): a full copy under
// the hold (as before copy-before-write), a copy-before-write cut (the
// copy runs after the hold) and a reflink (DROVER_REFLINK=1 or
// DROVER_REFLINK_DIR, see reflinkDir). The ratios of the pauses and of the
// times per set are printed. DROVER_BENCH=1 (make bench).
//
//	DROVER_BENCH=1 DROVER_REFLINK=1 go test -run '^$' -bench SnapshotPause -benchtime 3x ./target/store/
func BenchmarkSnapshotPause(b *testing.B) {
	if os.Getenv("DROVER_BENCH") != "1" {
		b.Skip("set DROVER_BENCH=1 to run (it writes 1 GiB and copies 1 GiB per set)")
	}
	pause, perSet := map[string]float64{}, map[string]float64{}
	for _, tc := range []struct {
		name   string
		dir    func(b *testing.B) string
		opts   Options
		method string
	}{
		{"full-copy", func(b *testing.B) string { return b.TempDir() }, Options{NoReflink: true}, MethodCopy},
		{"copy-before-write", func(b *testing.B) string { return b.TempDir() }, Options{NoReflink: true, CopyBeforeWrite: true}, MethodCopy},
		{"reflink", func(b *testing.B) string { return reflinkDir(b) }, Options{CopyBeforeWrite: true}, MethodReflink},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := Open(tc.dir(b), tc.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			for _, name := range []string{"boot", "data"} {
				v, err := s.Create(context.Background(), name, 1024, Access{})
				if err != nil {
					b.Fatal(err)
				}
				halfWrite(b, v.Path, 1024*MiB)
			}
			var held, copied time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				set, err := s.CreateSnapshotSet(context.Background(), SetRequest{Volumes: []string{"boot", "data"}, Freeze: noopFreeze})
				if err != nil {
					b.Fatal(err)
				}
				if set.Method != tc.method || set.Copying != tc.opts.CopyBeforeWrite && tc.method == MethodCopy {
					b.Fatalf("method %s copying %v, want %s", set.Method, set.Copying, tc.method)
				}
				held += set.Hold
				for _, sn := range set.Snapshots {
					if _, err := s.WaitCopied(context.Background(), sn.ID); err != nil {
						b.Fatal(err)
					}
				}
				copied += time.Since(start)
				b.StopTimer()
				if err := s.DeleteSnapshotSet(context.Background(), set.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			ms := float64(held.Microseconds()) / 1000 / float64(b.N)
			b.ReportMetric(ms, "hold-ms/op")
			b.ReportMetric(float64(copied.Milliseconds())/float64(b.N), "copied-ms/op")
			pause[tc.name] = ms
			perSet[tc.name] = float64(copied.Microseconds()) / 1000 / float64(b.N)
		})
	}
	if f, c := pause["full-copy"], pause["copy-before-write"]; f > 0 && c > 0 {
		fmt.Printf("pause for two 1 GiB volumes half written, copy-before-write/full copy: %.5f (%.3f ms against %.0f ms)\n", c/f, c, f)
	}
	if c, r := pause["copy-before-write"], pause["reflink"]; c > 0 && r > 0 {
		fmt.Printf("pause for two 1 GiB volumes half written, copy-before-write/reflink: %.4f (%.3f ms against %.2f ms)\n", c/r, c, r)
	}
	if f, r := perSet["full-copy"], perSet["reflink"]; f > 0 && r > 0 {
		fmt.Printf("time per set until usable, reflink/full copy: %.4f (%.2f ms against %.0f ms)\n", r/f, r, f)
	}
}

// halfWrite writes every other MiB of a file of size bytes with non-zero
// data and flushes it.
func halfWrite(b *testing.B, path string, size int64) {
	b.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, MiB)
	for i := range chunk {
		chunk[i] = byte(i*7 + 1)
	}
	for off := int64(0); off < size; off += 2 * MiB {
		if _, err := f.WriteAt(chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWriteDuringCopy times 4 KiB writes at random places of a 1 GiB
// volume (half written) through its WriteGuard, as the iSCSI engine makes
// them, with no copy running and while a copy-before-write snapshot of it
// copies (as fast as it can: the worst case, disk shared with the copier);
// the writes that land in chunks not yet copied copy 64 KiB first. It
// reports both means and their ratio. DROVER_BENCH=1.
func BenchmarkWriteDuringCopy(b *testing.B) {
	if os.Getenv("DROVER_BENCH") != "1" {
		b.Skip("set DROVER_BENCH=1 to run (it writes and copies 512 MiB per round)")
	}
	s, err := Open(b.TempDir(), Options{NoReflink: true, CopyBeforeWrite: true})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	v, err := s.Create(context.Background(), "v", 1024, Access{})
	if err != nil {
		b.Fatal(err)
	}
	halfWrite(b, v.Path, 1024*MiB)
	f, err := os.OpenFile(v.Path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	guard := s.WriteGuard("v")
	buf := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(3, 4))
	write := func() time.Duration {
		off := rng.Int64N(1024*MiB/4096) * 4096
		start := time.Now()
		guard.BeforeWrite(off, 4096)
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	const n = 2000
	var idle, copying []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for range n {
			idle = append(idle, write())
		}
		snap, err := s.CreateSnapshot(context.Background(), "v", noopFreeze)
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			copying = append(copying, write())
		}
		if got, _ := s.GetSnapshot(snap.ID); !got.Copying {
			b.Logf("round %d: the copy ended before the writes did", i)
		}
		b.StopTimer()
		if _, err := s.WaitCopied(context.Background(), snap.ID); err != nil {
			b.Fatal(err)
		}
		if err := s.DeleteSnapshot(context.Background(), snap.ID); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	mean := func(d []time.Duration) float64 {
		var t time.Duration
		for _, x := range d {
			t += x
		}
		return float64(t.Microseconds()) / float64(len(d))
	}
	p99 := func(d []time.Duration) float64 {
		d = slices.Clone(d)
		slices.Sort(d)
		return float64(d[len(d)*99/100].Microseconds())
	}
	b.ReportMetric(mean(idle), "idle-us/write")
	b.ReportMetric(mean(copying), "copying-us/write")
	b.ReportMetric(mean(copying)/mean(idle), "copying/idle")
	b.Logf("4 KiB write, mean: %.1f µs idle, %.1f µs during a copy (ratio %.2f); p99 %.0f / %.0f µs", mean(idle), mean(copying), mean(copying)/mean(idle), p99(idle), p99(copying))
}
