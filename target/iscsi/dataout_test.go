package iscsi

import (
	"encoding/binary"
	"testing"
)

// writeWithoutData sends a WRITE(10) of blocks blocks with no immediate
// data and returns the R2T the target answers with.
func (c *rawConn) writeWithoutData(itt, cmdSN uint32, blocks uint16) [bhsLen]byte {
	c.t.Helper()
	if _, err := c.nc.Write(scsiCmd(itt, cmdSN, rw10(0x2a, 0, blocks), uint32(blocks)*512, false, true, nil)); err != nil {
		c.t.Fatal(err)
	}
	r, _ := c.read()
	if r[0]&0x3f != opR2T {
		c.t.Fatalf("got opcode %#x, want an R2T", r[0]&0x3f)
	}
	return r
}

// dataOut sends one Data-Out PDU of the sequence an R2T asked for.
func (c *rawConn) dataOut(r2t [bhsLen]byte, dataSN, offset uint32, data []byte, final bool) {
	c.t.Helper()
	var h [bhsLen]byte
	h[0] = opDataOut
	if final {
		h[1] = flagFinal
	}
	copy(h[8:24], r2t[8:24]) // LUN, ITT, TTT
	binary.BigEndian.PutUint32(h[36:], dataSN)
	binary.BigEndian.PutUint32(h[40:], offset)
	c.write(&h, data)
}

// tmf sends a task management request and returns its response code.
func (c *rawConn) tmf(fn byte, itt, ref, cmdSN uint32) byte {
	c.t.Helper()
	var h [bhsLen]byte
	h[0] = flagImmedate | opTMFReq
	h[1] = 0x80 | fn
	binary.BigEndian.PutUint32(h[16:], itt)
	binary.BigEndian.PutUint32(h[20:], ref)
	binary.BigEndian.PutUint32(h[24:], cmdSN)
	c.write(&h, nil)
	for {
		r, _ := c.read()
		if r[0]&0x3f == opTMFResp {
			return r[2]
		}
		c.t.Fatalf("got opcode %#x before the TMF response", r[0]&0x3f)
	}
}

func TestDataOutWithAWrongDataSNEndsTheCommandWithACheckCondition(t *testing.T) {
	t.Parallel()
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "datasn", 1<<20, testInitiator)
	for i, tt := range []struct {
		name    string
		dataSNs []uint32 // of the two 512-byte Data-Outs (one when a single number)
		good    bool
	}{
		{"numbers in order complete the write", []uint32{0, 1}, true},
		{"a repeated number fails it", []uint32{0, 0}, false},
		{"a number out of the blue fails it", []uint32{27}, false},
		{"a number of -1 fails it", []uint32{0xffffffff}, false},
		{"numbers in reverse fail it", []uint32{1, 0}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := rawLogin(t, e, ex, testInitiator)
			c.t = t
			blocks := uint16(len(tt.dataSNs))
			r2t := c.writeWithoutData(uint32(10+i), 1, blocks)
			for j, sn := range tt.dataSNs {
				c.dataOut(r2t, sn, uint32(j)*512, make([]byte, 512), j == len(tt.dataSNs)-1)
			}
			r, data := c.read()
			if r[0]&0x3f != opSCSIResp {
				t.Fatalf("got opcode %#x, want a SCSI Response", r[0]&0x3f)
			}
			if tt.good {
				if r[3] != statusGood {
					t.Errorf("got status %#x, want GOOD", r[3])
				}
				return
			}
			if r[3] != statusCheckCondition || len(data) < 2+14 || data[2+2]&0x0f != senseAbortedCommand {
				t.Errorf("got status %#x sense %x, want CHECK CONDITION with ABORTED COMMAND", r[3], data)
			}
			// The session carries on: a next command is answered.
			r2t = c.writeWithoutData(100, 2, 1)
			c.dataOut(r2t, 0, 0, make([]byte, 512), true)
			if r, _ := c.read(); r[0]&0x3f != opSCSIResp || r[3] != statusGood {
				t.Errorf("the next write: got opcode %#x status %#x, want GOOD", r[0]&0x3f, r[3])
			}
		})
	}
}

func TestAbortTaskDropsAWaitingCommandAndReportsAnAnsweredOneAsGone(t *testing.T) {
	t.Parallel()
	const (
		abortTask = 1
		complete  = 0
		noTask    = 1
	)
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "abort", 1<<20, testInitiator)
	c := rawLogin(t, e, ex, testInitiator)

	c.writeWithoutData(21, 1, 2) // waits for its data
	if got := c.tmf(abortTask, 22, 21, 2); got != complete {
		t.Errorf("ABORT TASK of a write waiting for data: got response %d, want %d (function complete)", got, complete)
	}

	// An INQUIRY is answered at once; its answer comes next (nothing for
	// the aborted write), and aborting it then finds no task.
	if _, err := c.nc.Write(scsiCmd(23, 2, []byte{0x12, 0, 0, 0, 96, 0}, 96, true, false, nil)); err != nil {
		t.Fatal(err)
	}
	r, _ := c.read()
	if r[0]&0x3f != opDataIn || binary.BigEndian.Uint32(r[16:]) != 23 {
		t.Fatalf("got opcode %#x for task %d, want the INQUIRY's Data-In", r[0]&0x3f, binary.BigEndian.Uint32(r[16:]))
	}
	if got := c.tmf(abortTask, 24, 23, 3); got != noTask {
		t.Errorf("ABORT TASK of an answered INQUIRY: got response %d, want %d (task does not exist)", got, noTask)
	}
}

func TestWritesWaitingForDataHoldAtMostTheirBoundOfBuffers(t *testing.T) {
	t.Parallel()
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "parked", 1<<20, testInitiator)
	c := rawLogin(t, e, ex, testInitiator)
	const edtl = 48 << 20 // what the buffers are allocated by, whatever the CDB says
	cdb := func() []byte { return rw10(0x2a, 0, 8) }
	for i := uint32(0); i < pendingWriteMax/(48<<20); i++ {
		c.nc.Write(scsiCmd(30+i, 1+i, cdb(), edtl, false, true, nil))
		if r, _ := c.read(); r[0]&0x3f != opR2T {
			t.Fatalf("write %d: got opcode %#x, want an R2T", i, r[0]&0x3f)
		}
	}
	c.nc.Write(scsiCmd(40, 3, cdb(), edtl, false, true, nil))
	r, _ := c.read()
	if r[0]&0x3f != opSCSIResp || r[3] != statusTaskSetFull {
		t.Errorf("a write past the bound: got opcode %#x status %#x, want TASK SET FULL", r[0]&0x3f, r[3])
	}
	// Aborting one makes room again.
	if got := c.tmf(1, 41, 30, 4); got != 0 {
		t.Fatalf("ABORT TASK: got response %d, want 0", got)
	}
	c.nc.Write(scsiCmd(42, 4, cdb(), edtl, false, true, nil))
	if r, _ := c.read(); r[0]&0x3f != opR2T {
		t.Errorf("a write after the abort: got opcode %#x, want an R2T", r[0]&0x3f)
	}
}
