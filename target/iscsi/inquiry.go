package iscsi

import (
	"encoding/binary"
	"fmt"

	"github.com/gostor/gotgt/pkg/api"
)

// handleInquiry answers INQUIRY itself: gotgt's version claims implicit ALUA
// it does not implement and pads VPD pages beyond their length.
func handleInquiry(_ int, cmd *api.SCSICommand) api.SAMStat {
	c := contextOf(cmd)
	cdb := cmd.SCB
	if len(cdb) < 6 || cdb[1]&0xfe != 0 {
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	alloc := int(binary.BigEndian.Uint16(cdb[3:]))
	evpd := cdb[1]&0x01 != 0
	page := cdb[2]
	var b []byte
	switch {
	case !evpd && page != 0:
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	case !evpd:
		b = standardInquiry(0x00)
	default:
		var ok bool
		if b, ok = vpdPage(c.unit, page); !ok {
			return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
		}
	}
	return c.good(b[:min(alloc, len(b))], nil)
}

// inquiryNoLUN answers a standard INQUIRY to a LUN we do not export:
// peripheral qualifier 3, device type 1Fh.
func inquiryNoLUN(req *scsiRequest) scsiResult {
	cdb := req.cdb
	if len(cdb) < 6 || cdb[1]&0x01 != 0 || cdb[2] != 0 {
		return scsiResult{status: statusCheckCondition, sense: senseData(senseIllegalRequest, ascLUNNotSupported)}
	}
	b := standardInquiry(0x7f)
	return scsiResult{in: b[:min(int(binary.BigEndian.Uint16(cdb[3:])), len(b))]}
}

func standardInquiry(peripheral byte) []byte {
	b := make([]byte, 96)
	b[0] = peripheral
	b[2] = 0x06 // SPC-4
	b[3] = 0x12 // HISUP, response data format 2
	b[4] = byte(len(b) - 5)
	b[7] = 0x02 // CMDQUE
	copy(b[8:16], fmt.Sprintf("%-8s", "DROVER"))
	copy(b[16:32], fmt.Sprintf("%-16s", "VOLUME"))
	copy(b[32:36], "0001")
	for i, v := range []uint16{0x00a0, 0x0960, 0x0460, 0x04c0} { // SAM-5, iSCSI, SPC-4, SBC-3
		binary.BigEndian.PutUint16(b[58+2*i:], v)
	}
	return b
}

func vpdPage(u *logicalUnit, page byte) ([]byte, bool) {
	var body []byte
	switch page {
	case 0x00:
		body = []byte{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}
	case 0x80:
		body = []byte(fmt.Sprintf("%016x", u.lu.UUID))
	case 0x83:
		body = deviceIdentification(u)
	case 0xb0: // block limits
		body = make([]byte, 0x3c)
		body[0] = 0x01 // WSNZ
		body[1] = maxCompareAndWriteBlocks
		binary.BigEndian.PutUint16(body[2:], 8)
		binary.BigEndian.PutUint32(body[4:], maxTransferBlocks)
		binary.BigEndian.PutUint32(body[8:], 2048)
		binary.BigEndian.PutUint32(body[16:], 0xffffffff)
		binary.BigEndian.PutUint32(body[20:], maxUnmapDescs)
		binary.BigEndian.PutUint32(body[24:], 8)
		binary.BigEndian.PutUint32(body[28:], 0x80000000)
		binary.BigEndian.PutUint64(body[32:], maxWriteSameBlocks)
	case 0xb1: // block device characteristics
		body = make([]byte, 0x3c)
		binary.BigEndian.PutUint16(body[0:], 1) // non-rotating
	case 0xb2: // logical block provisioning
		body = []byte{0, 0x80 | 0x40 | 0x20 | 0x04, 0x02, 0} // LBPU, LBPWS, LBPWS10, LBPRZ; thin
	default:
		return nil, false
	}
	b := make([]byte, 4, 4+len(body))
	b[1] = page
	binary.BigEndian.PutUint16(b[2:], uint16(len(body)))
	return append(b, body...), true
}

func deviceIdentification(u *logicalUnit) []byte {
	var b []byte
	desc := func(proto, codeSet, assocType byte, id []byte) {
		b = append(b, proto<<4|codeSet, assocType, 0, byte(len(id)))
		b = append(b, id...)
	}
	naa := make([]byte, 8)
	binary.BigEndian.PutUint64(naa, 0x3<<60|u.lu.UUID)
	desc(0, 1, 0x03, naa) // NAA, logical unit
	desc(0, 2, 0x01, []byte(fmt.Sprintf("%-8s%016x", "DROVER", u.lu.UUID)))
	port := make([]byte, 4)
	binary.BigEndian.PutUint16(port[2:], 1)
	desc(5, 1, 0x80|0x10|0x04, port) // relative target port
	tpg := make([]byte, 4)
	binary.BigEndian.PutUint16(tpg[2:], 1)
	desc(5, 1, 0x80|0x10|0x05, tpg) // target port group
	desc(5, 3, 0x80|0x10|0x08, scsiName(u.target.Name+",t,0x0001"))
	desc(5, 3, 0x80|0x20|0x08, scsiName(u.target.Name))
	return b
}

// scsiName null-terminates and pads a SCSI name string to a multiple of 4.
func scsiName(s string) []byte {
	n := (len(s) + 1 + 3) &^ 3
	b := make([]byte, n)
	copy(b, s)
	return b
}
