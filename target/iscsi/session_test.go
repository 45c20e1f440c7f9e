package iscsi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSmallReadsAndWritesRunInline(t *testing.T) {
	t.Parallel()
	cdb10 := func(op, flags byte, blocks uint16) []byte {
		c := make([]byte, 10)
		c[0], c[1] = op, flags
		binary.BigEndian.PutUint16(c[7:], blocks)
		return c
	}
	tests := []struct {
		name string
		cdb  []byte
		edtl uint32
		want bool
	}{
		{"a 4 KiB READ(10) runs inline", cdb10(0x28, 0, 8), 4096, true},
		{"a 4 KiB WRITE(10) runs inline", cdb10(0x2a, 0, 8), 4096, true},
		{"a 64 KiB READ(10) runs inline", cdb10(0x28, 0, 128), 64 << 10, true},
		{"a 68 KiB READ(10) gets a goroutine", cdb10(0x28, 0, 136), 68 << 10, false},
		{"a READ(10) asking for more than its expected length gets a goroutine", cdb10(0x28, 0, 2048), 4096, false},
		{"a 4 KiB WRITE(10) with FUA gets a goroutine", cdb10(0x2a, 0x08, 8), 4096, false},
		{"a 4 KiB WRITE AND VERIFY gets a goroutine", cdb10(0x2e, 0, 8), 4096, false},
		{"SYNCHRONIZE CACHE gets a goroutine", cdb10(0x35, 0, 0), 0, false},
		{"TEST UNIT READY gets a goroutine", make([]byte, 6), 0, false},
		{"a READ(6) of 256 blocks (length 0) gets a goroutine", []byte{0x08, 0, 0, 0, 0, 0}, 128 << 10, false},
		{"a READ(6) of 8 blocks runs inline", []byte{0x08, 0, 0, 0, 8, 0}, 4096, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h [bhsLen]byte
			h[0] = opSCSICmd
			binary.BigEndian.PutUint32(h[20:], tt.edtl)
			copy(h[32:], tt.cdb)
			if got := runsInline(&h); got != tt.want {
				t.Errorf("runsInline: got %v, want %v", got, tt.want)
			}
		})
	}
}

// rawConn is a minimal iSCSI initiator on a plain TCP connection, enough to
// send hand-made command PDUs in bursts.
type rawConn struct {
	t  *testing.T
	nc net.Conn
}

func rawLogin(t *testing.T, e *Engine, ex Export, initiator string) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", portal(e))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &rawConn{t: t, nc: nc}
	var h [bhsLen]byte
	h[0] = flagImmedate | opLoginReq
	h[1] = 0x80 | 3 // transit from the security stage straight to full feature
	copy(h[8:14], []byte{0x80, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint32(h[24:], 1) // CmdSN
	text := marshalText([]kv{{"InitiatorName", initiator}, {"TargetName", ex.IQN}, {"SessionType", "Normal"},
		{"AuthMethod", "None"}, {"MaxRecvDataSegmentLength", "262144"}})
	c.write(&h, text)
	r, _ := c.read()
	if r[0]&0x3f != opLoginResp || r[36] != 0 || r[1]&0x83 != 0x83 {
		t.Fatalf("login response: got opcode %#x, flags %#x, status %#x%02x; want a successful transit to full feature", r[0]&0x3f, r[1], r[36], r[37])
	}
	return c
}

func (c *rawConn) write(h *[bhsLen]byte, data []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(rawPDU(h, data)); err != nil {
		c.t.Fatal(err)
	}
}

func rawPDU(h *[bhsLen]byte, data []byte) []byte {
	h[5], h[6], h[7] = byte(len(data)>>16), byte(len(data)>>8), byte(len(data))
	b := append(h[:0:0], h[:]...)
	b = append(b, data...)
	return append(b, make([]byte, (4-len(data)%4)%4)...)
}

func (c *rawConn) read() ([bhsLen]byte, []byte) {
	c.t.Helper()
	var h [bhsLen]byte
	if _, err := io.ReadFull(c.nc, h[:]); err != nil {
		c.t.Fatalf("read response: %v", err)
	}
	n := int(h[5])<<16 | int(h[6])<<8 | int(h[7])
	data := make([]byte, (n+3)&^3)
	if _, err := io.ReadFull(c.nc, data); err != nil {
		c.t.Fatalf("read response data: %v", err)
	}
	return h, data[:n]
}

// scsiCmd builds a SCSI Command PDU for a 10-byte CDB with immediate data.
func scsiCmd(itt, cmdSN uint32, cdb []byte, edtl uint32, read, write bool, data []byte) []byte {
	var h [bhsLen]byte
	h[0] = opSCSICmd
	h[1] = 0x80 | 0x01 // final, simple task
	if read {
		h[1] |= 0x40
	}
	if write {
		h[1] |= 0x20
	}
	binary.BigEndian.PutUint32(h[16:], itt)
	binary.BigEndian.PutUint32(h[20:], edtl)
	binary.BigEndian.PutUint32(h[24:], cmdSN)
	copy(h[32:], cdb)
	return rawPDU(&h, data)
}

func rw10(op byte, lba uint32, blocks uint16) []byte {
	c := make([]byte, 10)
	c[0] = op
	binary.BigEndian.PutUint32(c[2:], lba)
	binary.BigEndian.PutUint16(c[7:], blocks)
	return c
}

// burstCmd is one command of a burst: a READ(10), a WRITE(10) with data,
// or (neither) a SYNCHRONIZE CACHE(10).
type burstCmd struct {
	read, write bool
	off, n      int
	data        []byte
}

// burst sends cmds in one write, with task tags and CmdSNs from first on,
// and checks that each is answered exactly once with GOOD, StatSNs in order,
// that reads return content and that writes reach the file at path.
func (c *rawConn) burst(first uint32, cmds []burstCmd, content []byte, path string) {
	t := c.t
	t.Helper()
	var b []byte
	for i, cmd := range cmds {
		tag := first + uint32(i)
		switch {
		case cmd.read:
			b = append(b, scsiCmd(tag, tag, rw10(0x28, uint32(cmd.off>>9), uint16(cmd.n>>9)), uint32(cmd.n), true, false, nil)...)
		case cmd.write:
			b = append(b, scsiCmd(tag, tag, rw10(0x2a, uint32(cmd.off>>9), uint16(cmd.n>>9)), uint32(cmd.n), false, true, cmd.data)...)
		default:
			b = append(b, scsiCmd(tag, tag, rw10(0x35, 0, 0), 0, false, false, nil)...)
		}
	}
	if _, err := c.nc.Write(b); err != nil {
		t.Fatal(err)
	}
	got := map[uint32][]byte{}
	answered := map[uint32]bool{}
	var statSN uint32
	for len(answered) < len(cmds) {
		h, data := c.read()
		tag := binary.BigEndian.Uint32(h[16:])
		switch h[0] & 0x3f {
		case opDataIn:
			off := int(binary.BigEndian.Uint32(h[40:]))
			if off != len(got[tag]) {
				t.Fatalf("data-in for task %d at offset %d: want offset %d", tag, off, len(got[tag]))
			}
			got[tag] = append(got[tag], data...)
			if h[1]&0x01 == 0 {
				continue
			}
		case opSCSIResp:
		default:
			t.Fatalf("unexpected response opcode %#x", h[0]&0x3f)
		}
		if h[3] != statusGood {
			t.Fatalf("task %d: got status %#x, want GOOD", tag, h[3])
		}
		sn := binary.BigEndian.Uint32(h[24:])
		if len(answered) > 0 && sn != statSN+1 {
			t.Fatalf("task %d: got StatSN %d after %d, want %d", tag, sn, statSN, statSN+1)
		}
		statSN = sn
		if answered[tag] {
			t.Fatalf("task %d answered twice", tag)
		}
		answered[tag] = true
	}
	for i, cmd := range cmds {
		tag := first + uint32(i)
		if cmd.read && !bytes.Equal(got[tag], content[cmd.off:cmd.off+cmd.n]) {
			t.Errorf("task %d: read %d bytes at %d: data differs from the file", tag, cmd.n, cmd.off)
		}
		if cmd.write {
			if b := readFile(t, path, int64(cmd.off), int64(cmd.n)); !bytes.Equal(b, cmd.data) {
				t.Errorf("task %d: write of %d bytes at %d is not in the backing file", tag, cmd.n, cmd.off)
			}
		}
	}
}

func TestBurstsOfCommandsAreAnsweredInFullAndInOrder(t *testing.T) {
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "burst", 16<<20, testInitiator)
	content := make([]byte, 16<<20)
	for i := range content {
		content[i] = byte(i*13 + i>>12)
	}
	if err := os.WriteFile(ex.Path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	c := rawLogin(t, e, ex, testInitiator)

	// 100 commands: 4 KiB reads and writes (inline, queued), 64 KiB reads
	// (inline, written at once), 1 MiB reads and a SYNCHRONIZE CACHE
	// (goroutines). Together they pass the queue bound.
	var mixed []burstCmd
	for i := 0; i < 100; i++ {
		switch {
		case i%25 == 7:
			mixed = append(mixed, burstCmd{read: true, off: (i % 8) << 20, n: 1 << 20})
		case i%10 == 3:
			mixed = append(mixed, burstCmd{read: true, off: 8<<20 + i<<16, n: 64 << 10})
		case i%5 == 1:
			mixed = append(mixed, burstCmd{write: true, off: 15<<20 + i<<12, n: 4096, data: bytes.Repeat([]byte{byte(i)}, 4096)})
		case i == 50:
			mixed = append(mixed, burstCmd{})
		default:
			mixed = append(mixed, burstCmd{read: true, off: i << 12, n: 4096})
		}
	}
	c.burst(1, mixed, content, ex.Path)

	// Only small commands: nothing but the reader's flush sends them.
	var small []burstCmd
	for i := 0; i < 20; i++ {
		small = append(small, burstCmd{read: true, off: (100 + i) << 12, n: 4096})
	}
	c.burst(101, small, content, ex.Path)

	// Reads from disk, not from the page cache: they leave the reader
	// goroutine (see runInline) and still come back right.
	dropPageCache(t, ex.Path)
	var cold []burstCmd
	for i := 0; i < 20; i++ {
		cold = append(cold, burstCmd{read: true, off: (200 + i*3) << 12, n: 4096})
	}
	c.burst(121, cold, content, ex.Path)
}

// dropPageCache writes the file's dirty pages and drops its cached ones.
func dropPageCache(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatalf("fadvise DONTNEED: %v", err)
	}
}

func TestReadsThatWouldWaitForTheDiskAreRefusedWithoutWaiting(t *testing.T) {
	t.Parallel()
	path := newBackingFile(t, t.TempDir(), 1<<20)
	want := bytes.Repeat([]byte("drover"), 1<<20/6+1)[:1<<20]
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := openFileStore(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.f.Close()
	dropPageCache(t, path)
	buf := make([]byte, 4096)
	if err := st.readAtNoWait(buf, 64<<10); err == nil {
		t.Skip("the page cache of the test directory cannot be dropped (tmpfs?)")
	} else if !errors.Is(err, errWouldBlock) {
		t.Fatalf("readAtNoWait of an uncached block: got %v, want errWouldBlock", err)
	}
	if err := st.readAt(buf, 64<<10); err != nil {
		t.Fatalf("readAt: got %v, want nil", err)
	}
	clear(buf)
	if err := st.readAtNoWait(buf, 64<<10); err != nil {
		t.Fatalf("readAtNoWait of a cached block: got %v, want nil", err)
	}
	if !bytes.Equal(buf, want[64<<10:68<<10]) {
		t.Errorf("readAtNoWait: data differs from the file")
	}
	if err := st.readAtNoWait(buf, 1<<20-1024); !errors.Is(err, errWouldBlock) {
		t.Errorf("readAtNoWait across the end of the file: got %v, want errWouldBlock", err)
	}
}
