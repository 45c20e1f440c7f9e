package store

import (
	"context"
	"os"
	"testing"
	"time"
)

// BenchmarkSnapshotSet cuts a snapshot set of two 1 GiB volumes with half
// of each written (every other MiB), by copying and by reflinking, and
// reports the time per set and how long writes were held for it
// (hold-ms/op: the cut under Freeze, as the API holds writes; nobody writes
// here, so there is nothing to drain). It runs with DROVER_BENCH=1 (make
// bench); the reflink case also needs a filesystem with reflinks, see
// reflinkDir (DROVER_REFLINK=1 or DROVER_REFLINK_DIR). The ratio of the two
// is logged.
//
//	DROVER_BENCH=1 DROVER_REFLINK=1 go test -run '^$' -bench SnapshotSet -benchmem ./target/store/
func BenchmarkSnapshotSet(b *testing.B) {
	if os.Getenv("DROVER_BENCH") != "1" {
		b.Skip("set DROVER_BENCH=1 to run (it writes 1 GiB and copies 1 GiB per set)")
	}
	perOp := map[string]float64{}
	for _, tc := range []struct {
		name string
		dir  func(b *testing.B) string
	}{
		{MethodCopy, func(b *testing.B) string { return b.TempDir() }},
		{MethodReflink, func(b *testing.B) string { return reflinkDir(b) }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s, err := Open(tc.dir(b), Options{NoReflink: tc.name == MethodCopy})
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
			var held time.Duration
			freeze := func(ctx context.Context) (context.Context, func() error, error) {
				return ctx, func() error { return nil }, nil
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				set, err := s.CreateSnapshotSet(context.Background(), SetRequest{Volumes: []string{"boot", "data"}, Freeze: freeze})
				if err != nil {
					b.Fatal(err)
				}
				if set.Method != tc.name {
					b.Fatalf("method %s, want %s", set.Method, tc.name)
				}
				held += set.Hold
				b.StopTimer()
				if err := s.DeleteSnapshotSet(context.Background(), set.ID); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(held.Microseconds())/1000/float64(b.N), "hold-ms/op")
			perOp[tc.name] = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		})
	}
	if c, r := perOp[MethodCopy], perOp[MethodReflink]; c > 0 && r > 0 {
		b.Logf("reflink/copy time per set: %.4f (copy %.0f ms, reflink %.2f ms)", r/c, c/1e6, r/1e6)
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
