package iscsi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/drover/terraform-provider-drover/target/api"
	"github.com/drover/terraform-provider-drover/target/api/wire"
	"github.com/drover/terraform-provider-drover/target/store"
	"golang.org/x/sys/unix"
)

// TestWritesWhileASnapshotCopiesMissTheSnapshot: a copy-before-write
// snapshot through the management API, then QEMU's initiator writes all
// over the volume (data and holes) while the background copy is still
// running. The snapshot holds the volume at the cut, byte for byte, its
// holes still holes; the volume holds the writes.
func TestWritesWhileASnapshotCopiesMissTheSnapshot(t *testing.T) {
	requireTool(t, "qemu-io")
	st, err := store.Open(t.TempDir(), store.Options{Logger: testLogger(t), NoReflink: true, CopyBeforeWrite: true, CopyRate: 6 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	e, err := New(Config{Listen: "127.0.0.1:0", Logger: testLogger(t), WriteGuards: st})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	const token = "cbw-test-token"
	a, err := api.New(api.Config{Store: st, Exporter: &apiEngine{e: e}, Token: token, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	call := func(method, path, body string, want int, out any) {
		t.Helper()
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		rec := httptest.NewRecorder()
		a.ServeHTTP(rec, req)
		if rec.Code != want {
			t.Fatalf("%s %s: status %d, want %d; body %s", method, path, rec.Code, want, rec.Body)
		}
		if out != nil {
			if err := json.Unmarshal(rec.Body.Bytes(), out); err != nil {
				t.Fatal(err)
			}
		}
	}
	const size, data = 32 << 20, 16 << 20 // the first 16 MiB hold data, the rest is a hole
	call("POST", "/v1/volumes", fmt.Sprintf(`{"name":"cbw","size_mib":%d,"initiators":["%s"]}`, size>>20, testInitiator), http.StatusCreated, nil)
	ex := Export{Name: "cbw", IQN: api.DefaultIQNPrefix + "cbw", LUN: api.LUN}
	mustSucceed(t, "write before the snapshot", <-runQemuIO(t, e, ex, testInitiator, fmt.Sprintf("write -P 0x11 0 %d", data), "flush"))

	var snap wire.Snapshot
	call("POST", "/v1/volumes/cbw/snapshots", "", http.StatusCreated, &snap)
	if snap.State != wire.StateCopying {
		t.Fatalf("snapshot after its cut: state %q, want copying", snap.State)
	}
	// Writes of every kind all over the volume: WRITE over data and over
	// holes, WRITE SAME (write -z: zeroes), UNMAP (discard).
	type write struct {
		off, n  int64
		pattern int // -1: zeros
	}
	var cmds []string
	var writes []write
	for i := int64(0); i < 48; i++ {
		w := write{off: i * (size / 48) &^ 511, n: 64 << 10, pattern: 0x40 + int(i)}
		switch i % 8 {
		case 5:
			cmds = append(cmds, fmt.Sprintf("write -z %d %d", w.off, w.n))
			w.pattern = -1
		case 7:
			cmds = append(cmds, fmt.Sprintf("discard %d %d", w.off, w.n))
			w.pattern = -1
		default:
			cmds = append(cmds, fmt.Sprintf("write -P %#x %d %d", w.pattern, w.off, w.n))
		}
		writes = append(writes, w)
	}
	mustSucceed(t, "writes during the copy", <-runQemuIO(t, e, ex, testInitiator, append(cmds, "flush")...))
	if s, err := st.GetSnapshot(snap.ID); err != nil || !s.Copying {
		t.Fatalf("the copy was over before the writes were (%v); the test proves nothing: lower CopyRate", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := st.WaitCopied(ctx, snap.ID)
	if err != nil {
		t.Fatal(err)
	}

	want := append(bytes.Repeat([]byte{0x11}, data), make([]byte, size-data)...)
	if got := readFile(t, s.Path, 0, size); !bytes.Equal(got, want) {
		i := 0
		for got[i] == want[i] {
			i++
		}
		t.Fatalf("snapshot differs from the volume at the cut first at byte %d: got %#x, want %#x", i, got[i], want[i])
	}
	var stat unix.Stat_t
	if err := unix.Stat(s.Path, &stat); err != nil {
		t.Fatal(err)
	}
	if alloc := stat.Blocks * 512; alloc > data+1<<20 {
		t.Errorf("snapshot allocates %d bytes; the cut held %d of data (holes must stay holes)", alloc, data)
	}
	v, err := st.Get("cbw")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range writes {
		b := byte(0)
		if w.pattern >= 0 {
			b = byte(w.pattern)
		}
		if got := readFile(t, v.Path, w.off, w.n); !bytes.Equal(got, bytes.Repeat([]byte{b}, int(w.n))) {
			t.Errorf("volume at %d: got %#x..., want the write made during the copy (%#x)", w.off, got[:4], b)
		}
	}
}
