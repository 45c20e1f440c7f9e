package iscsi

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"
	"time"

	"github.com/gostor/gotgt/pkg/api"
)

// newTestUnit builds a logical unit over a new sparse file of size bytes,
// without an engine or a network; rs may be nil.
func newTestUnit(t *testing.T, name string, size int64, rs ReservationStore) (*logicalUnit, string) {
	t.Helper()
	path := newBackingFile(t, t.TempDir(), size)
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	fs, err := openFileStore(path, m.forVolume(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.close() })
	u, err := newLogicalUnit("iqn.2026-11.io.drover:"+name, name, 0, fs, uint64(size), rs, testLogger(t))
	if err != nil {
		t.Fatalf("newLogicalUnit: got error %v, want nil", err)
	}
	t.Cleanup(u.close)
	return u, path
}

func testNexus(port string) *nexus { return &nexus{itn: &api.ITNexus{Tag: port}, port: port} }

func cawCDB(lba uint64, blocks byte, flags byte) []byte {
	cdb := make([]byte, 16)
	cdb[0] = opCompareAndWrite
	cdb[1] = flags
	binary.BigEndian.PutUint64(cdb[2:], lba)
	cdb[13] = blocks
	return cdb
}

func write16CDB(lba uint64, blocks uint32) []byte {
	cdb := make([]byte, 16)
	cdb[0] = opWrite16
	binary.BigEndian.PutUint64(cdb[2:], lba)
	binary.BigEndian.PutUint32(cdb[10:], blocks)
	return cdb
}

func run(u *logicalUnit, n *nexus, cdb, out []byte, edtl int) scsiResult {
	return u.execute(&scsiRequest{cdb: cdb, edtl: uint32(edtl), write: out != nil, read: out == nil && edtl > 0, out: out, nexus: n})
}

func senseKeyASC(t *testing.T, r scsiResult) (byte, uint16) {
	t.Helper()
	if len(r.sense) < 14 {
		t.Fatalf("sense: got %x, want fixed-format sense data", r.sense)
	}
	return r.sense[2] & 0x0f, binary.BigEndian.Uint16(r.sense[12:])
}

func TestCompareAndWrite(t *testing.T) {
	t.Parallel()
	const size = 1 << 20
	blocks := uint64(size / blockSize)
	pattern := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n*blockSize) }
	tests := []struct {
		name      string
		cdb       []byte
		out       []byte
		edtl      int
		wantKey   byte // 0: GOOD
		wantASC   uint16
		wantInfo  int // offset of the first miscompare, for MISCOMPARE
		wantAfter []byte
	}{
		{"matching data is replaced", cawCDB(4, 2, 0), append(pattern('A', 2), pattern('B', 2)...), 4 * blockSize, 0, 0, 0, pattern('B', 2)},
		{"FUA is accepted", cawCDB(4, 2, 0x08), append(pattern('A', 2), pattern('C', 2)...), 4 * blockSize, 0, 0, 0, pattern('C', 2)},
		{"a miscompare reports its offset and writes nothing", cawCDB(4, 2, 0),
			append(append(pattern('A', 1), append(pattern('A', 1)[:100], pattern('x', 1)[100:]...)...), pattern('B', 2)...),
			4 * blockSize, senseMiscompare, ascMiscompare, blockSize + 100, pattern('A', 2)},
		{"zero blocks do nothing", cawCDB(4, 0, 0), nil, 0, 0, 0, 0, pattern('A', 2)},
		{"zero blocks with data-out are refused", cawCDB(4, 0, 0), pattern('A', 2), 2 * blockSize, senseIllegalRequest, ascInvalidFieldInCDB, 0, pattern('A', 2)},
		{"too little data-out is refused", cawCDB(4, 2, 0), append(pattern('A', 2), pattern('B', 1)...), 3 * blockSize, senseIllegalRequest, ascInvalidFieldInCDB, 0, pattern('A', 2)},
		{"too much data-out is refused", cawCDB(4, 1, 0), append(pattern('A', 2), pattern('B', 2)...), 4 * blockSize, senseIllegalRequest, ascInvalidFieldInCDB, 0, pattern('A', 2)},
		{"beyond the end is out of range", cawCDB(blocks-1, 2, 0), append(pattern('A', 2), pattern('B', 2)...), 4 * blockSize, senseIllegalRequest, ascLBAOutOfRange, 0, pattern('A', 2)},
		{"protection information is refused", cawCDB(4, 2, 0x20), append(pattern('A', 2), pattern('B', 2)...), 4 * blockSize, senseIllegalRequest, ascInvalidFieldInCDB, 0, pattern('A', 2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, path := newTestUnit(t, "caw", size, nil)
			n := testNexus("iqn.2026-11.io.drover.test:a,i,0x1")
			if r := run(u, n, write16CDB(4, 2), pattern('A', 2), 2*blockSize); r.status != statusGood {
				t.Fatalf("WRITE(16): got status %#x, want GOOD", r.status)
			}
			out := tt.out
			if out == nil {
				out = []byte{}
			}
			r := run(u, n, tt.cdb, out, tt.edtl)
			if tt.wantKey == 0 {
				if r.status != statusGood {
					t.Fatalf("COMPARE AND WRITE: got status %#x sense %x, want GOOD", r.status, r.sense)
				}
			} else {
				if r.status != statusCheckCondition {
					t.Fatalf("COMPARE AND WRITE: got status %#x, want CHECK CONDITION", r.status)
				}
				key, asc := senseKeyASC(t, r)
				if key != tt.wantKey || asc != tt.wantASC {
					t.Fatalf("sense: got key %#x ASC %#04x, want %#x %#04x", key, asc, tt.wantKey, tt.wantASC)
				}
				if key == senseMiscompare {
					if r.sense[0]&0x80 == 0 {
						t.Errorf("sense: VALID bit clear, want set with the miscompare offset")
					}
					if got := int(binary.BigEndian.Uint32(r.sense[3:])); got != tt.wantInfo {
						t.Errorf("INFORMATION: got %d, want %d", got, tt.wantInfo)
					}
				}
			}
			if got := readFile(t, path, 4*blockSize, int64(len(tt.wantAfter))); !bytes.Equal(got, tt.wantAfter) {
				t.Errorf("blocks 4-5 after: got %q..., want %q...", got[:8], tt.wantAfter[:8])
			}
		})
	}
}

// TestCompareAndWriteIsAtomic has two initiators increment a counter
// block with COMPARE AND WRITE (read the value, swap it for value+1): if
// two swaps ever compared against the same value and both succeeded, the
// counter ends below the number of successful swaps.
func TestCompareAndWriteIsAtomic(t *testing.T) {
	t.Parallel()
	u, _ := newTestUnit(t, "caw-race", 1<<20, nil)
	block := func(v uint64) []byte {
		b := make([]byte, blockSize)
		binary.BigEndian.PutUint64(b, v)
		return b
	}
	read16 := make([]byte, 16)
	read16[0] = opRead16
	binary.BigEndian.PutUint32(read16[10:], 1)
	const perInitiator = 300
	var wg sync.WaitGroup
	var mu sync.Mutex
	swaps := 0
	for _, port := range []string{"iqn.2026-11.io.drover.test:a,i,0x1", "iqn.2026-11.io.drover.test:b,i,0x1"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := testNexus(port)
			for i := 0; i < perInitiator; i++ {
				r := run(u, n, read16, nil, blockSize)
				if r.status != statusGood {
					t.Errorf("READ(16): got status %#x, want GOOD", r.status)
					return
				}
				v := binary.BigEndian.Uint64(r.in)
				if r.release != nil {
					r.release()
				}
				if run(u, n, cawCDB(0, 1, 0), append(block(v), block(v+1)...), 2*blockSize).status == statusGood {
					mu.Lock()
					swaps++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	r := run(u, testNexus("x,i,0x1"), read16, nil, blockSize)
	if got := binary.BigEndian.Uint64(r.in); got != uint64(swaps) {
		t.Errorf("counter after %d successful swaps: got %d, want %d", swaps, got, swaps)
	}
}

// TestCompareAndWriteWaitsForRunningCommands checks the mechanism: a
// COMPARE AND WRITE does not start while another command of the unit (here
// a stand-in holding the unit's lock as every command does) is running.
func TestCompareAndWriteWaitsForRunningCommands(t *testing.T) {
	t.Parallel()
	u, _ := newTestUnit(t, "caw-wait", 1<<20, nil)
	u.mu.RLock()
	done := make(chan scsiResult)
	go func() {
		done <- run(u, testNexus("a,i,0x1"), cawCDB(0, 1, 0), make([]byte, 2*blockSize), 2*blockSize)
	}()
	select {
	case r := <-done:
		t.Fatalf("COMPARE AND WRITE finished (status %#x) while another command ran", r.status)
	case <-time.After(50 * time.Millisecond):
	}
	u.mu.RUnlock()
	if r := <-done; r.status != statusGood {
		t.Errorf("COMPARE AND WRITE after the command ended: got status %#x, want GOOD", r.status)
	}
}

func TestReportSupportedOpcodes(t *testing.T) {
	t.Parallel()
	u, _ := newTestUnit(t, "rsoc", 1<<20, nil)
	n := testNexus("iqn.2026-11.io.drover.test:a,i,0x1")
	rsoc := func(options byte, op byte, sa uint16) []byte {
		cdb := make([]byte, 12)
		cdb[0], cdb[1], cdb[2], cdb[3] = opMaintenanceIn, saReportSupportedOps, options, op
		binary.BigEndian.PutUint16(cdb[4:], sa)
		binary.BigEndian.PutUint32(cdb[6:], 65535)
		return cdb
	}
	for _, rctd := range []byte{0, 0x80} {
		r := run(u, n, rsoc(rctd, 0, 0), nil, 65535)
		if r.status != statusGood {
			t.Fatalf("all commands (RCTD %#x): got status %#x, want GOOD", rctd, r.status)
		}
		step := 8
		if rctd != 0 {
			step = 20
		}
		body := r.in[4:]
		if len(body) != len(supportedCommands)*step || int(binary.BigEndian.Uint32(r.in)) != len(body) {
			t.Fatalf("all commands (RCTD %#x): got %d bytes, want %d descriptors of %d", rctd, len(body), len(supportedCommands), step)
		}
		for i := 0; i < len(body); i += step {
			if ctdp := body[i+5]&0x02 != 0; ctdp != (rctd != 0) {
				t.Errorf("descriptor of %#02x: CTDP %v with RCTD %#x", body[i], ctdp, rctd)
			}
			if rctd != 0 && binary.BigEndian.Uint16(body[i+8:]) != 0x0a {
				t.Errorf("descriptor of %#02x: timeouts descriptor length %d, want 10", body[i], binary.BigEndian.Uint16(body[i+8:]))
			}
		}
	}
	r := run(u, n, rsoc(1, opCompareAndWrite, 0), nil, 65535)
	if r.status != statusGood || r.in[1]&0x07 != 3 || r.in[4] != opCompareAndWrite || r.in[5]&0x18 != 0x18 {
		t.Errorf("COMPARE AND WRITE: got status %#x data %x, want supported with DPO and FUA in its usage data", r.status, r.in)
	}
	if r := run(u, n, rsoc(1, opPROut, 0), nil, 65535); r.status != statusCheckCondition {
		t.Errorf("PERSISTENT RESERVE OUT without a service action: got status %#x, want CHECK CONDITION", r.status)
	}
	if r := run(u, n, rsoc(2, opPROut, prOutReserve), nil, 65535); r.status != statusGood || r.in[1]&0x07 != 3 {
		t.Errorf("PERSISTENT RESERVE OUT / RESERVE: got status %#x data %x, want supported", r.status, r.in)
	}
	if r := run(u, n, rsoc(2, opRead10, 0), nil, 65535); r.status != statusCheckCondition {
		t.Errorf("READ(10) with a service action: got status %#x, want CHECK CONDITION", r.status)
	}
	inq := run(u, n, []byte{opInquiry, 0x01, 0xb0, 0, 0xff, 0}, nil, 255)
	if inq.status != statusGood || inq.in[5] != maxCompareAndWriteBlocks {
		t.Errorf("Block Limits VPD: MAXIMUM COMPARE AND WRITE LENGTH got %d, want %d", inq.in[5], maxCompareAndWriteBlocks)
	}
}
