package iscsi

import "encoding/binary"

// SCSI operation codes (SPC-4, SBC-3) that our own code looks at. The write
// hold (hold.go), the reservation checks (pr.go) and REPORT SUPPORTED
// OPERATION CODES (below) all name them from here.
const (
	opTestUnitReady     = 0x00
	opRequestSense      = 0x03
	opFormatUnit        = 0x04
	opRead6             = 0x08
	opWrite6            = 0x0a
	opInquiry           = 0x12
	opModeSelect6       = 0x15
	opReserve6          = 0x16
	opRelease6          = 0x17
	opModeSense6        = 0x1a
	opStartStopUnit     = 0x1b
	opSendDiagnostic    = 0x1d
	opPreventAllow      = 0x1e
	opReadCapacity10    = 0x25
	opRead10            = 0x28
	opWrite10           = 0x2a
	opWriteVerify10     = 0x2e
	opVerify10          = 0x2f
	opPreFetch10        = 0x34
	opSyncCache10       = 0x35
	opWriteSame10       = 0x41
	opUnmap             = 0x42
	opLogSelect         = 0x4c
	opLogSense          = 0x4d
	opModeSelect10      = 0x55
	opReserve10         = 0x56
	opRelease10         = 0x57
	opModeSense10       = 0x5a
	opPRIn              = 0x5e
	opPROut             = 0x5f
	opRead16            = 0x88
	opCompareAndWrite   = 0x89
	opWrite16           = 0x8a
	opORWrite16         = 0x8b
	opWriteVerify16     = 0x8e
	opVerify16          = 0x8f
	opPreFetch16        = 0x90
	opSyncCache16       = 0x91
	opWriteSame16       = 0x93
	opWriteAtomic16     = 0x9c
	opServiceActionIn16 = 0x9e
	opReportLUNs        = 0xa0
	opMaintenanceIn     = 0xa3
	opRead12            = 0xa8
	opWrite12           = 0xaa
	opWriteVerify12     = 0xae
	opVerify12          = 0xaf
)

// Service actions of SERVICE ACTION IN(16) and MAINTENANCE IN.
const (
	saReadCapacity16     = 0x10
	saGetLBAStatus       = 0x12
	saReportSupportedOps = 0x0c
)

// supportedCommand is one row of REPORT SUPPORTED OPERATION CODES: the CDB
// usage data is the CDB with every bit set that the device server looks at
// (SPC-4 6.35.3); byte 0 is the operation code, and for a command with
// service actions byte 1 carries the service action.
type supportedCommand struct {
	op    byte
	sa    uint16
	hasSA bool
	usage []byte
}

// supportedCommands lists every command a volume serves, in opcode order.
// DPO and FUA are marked in the usage of the commands that take them,
// because MODE SENSE advertises DPOFUA.
var supportedCommands = []supportedCommand{
	{op: opTestUnitReady, usage: []byte{opTestUnitReady, 0, 0, 0, 0, 0x07}},
	{op: opRequestSense, usage: []byte{opRequestSense, 0x01, 0, 0, 0xff, 0x07}},
	{op: opRead6, usage: []byte{opRead6, 0x1f, 0xff, 0xff, 0xff, 0x07}},
	{op: opWrite6, usage: []byte{opWrite6, 0x1f, 0xff, 0xff, 0xff, 0x07}},
	{op: opInquiry, usage: []byte{opInquiry, 0x01, 0xff, 0xff, 0xff, 0x07}},
	{op: opModeSelect6, usage: []byte{opModeSelect6, 0x11, 0, 0, 0xff, 0x07}},
	{op: opReserve6, usage: []byte{opReserve6, 0, 0, 0, 0, 0x07}},
	{op: opRelease6, usage: []byte{opRelease6, 0, 0, 0, 0, 0x07}},
	{op: opModeSense6, usage: []byte{opModeSense6, 0x08, 0xff, 0xff, 0xff, 0x07}},
	{op: opStartStopUnit, usage: []byte{opStartStopUnit, 0x01, 0, 0x0f, 0xf7, 0x07}},
	{op: opPreventAllow, usage: []byte{opPreventAllow, 0, 0, 0, 0x03, 0x07}},
	{op: opReadCapacity10, usage: []byte{opReadCapacity10, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x07}},
	{op: opRead10, usage: []byte{opRead10, 0x18, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: opWrite10, usage: []byte{opWrite10, 0x18, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: opWriteVerify10, usage: []byte{opWriteVerify10, 0x12, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: opVerify10, usage: []byte{opVerify10, 0x16, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: opPreFetch10, usage: []byte{opPreFetch10, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: opSyncCache10, usage: []byte{opSyncCache10, 0x02, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: opWriteSame10, usage: []byte{opWriteSame10, 0x08, 0xff, 0xff, 0xff, 0xff, 0x1f, 0xff, 0xff, 0x07}},
	{op: opUnmap, usage: []byte{opUnmap, 0, 0, 0, 0, 0, 0x1f, 0xff, 0xff, 0x07}},
	{op: opModeSelect10, usage: []byte{opModeSelect10, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}},
	{op: opReserve10, usage: []byte{opReserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0x07}},
	{op: opRelease10, usage: []byte{opRelease10, 0, 0, 0, 0, 0, 0, 0, 0, 0x07}},
	{op: opModeSense10, usage: []byte{opModeSense10, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x07}},
	{op: opPRIn, sa: 0x00, hasSA: true, usage: prInUsage(0x00)},
	{op: opPRIn, sa: 0x01, hasSA: true, usage: prInUsage(0x01)},
	{op: opPRIn, sa: 0x02, hasSA: true, usage: prInUsage(0x02)},
	{op: opPRIn, sa: 0x03, hasSA: true, usage: prInUsage(0x03)},
	{op: opPROut, sa: prOutRegister, hasSA: true, usage: prOutUsage(prOutRegister)},
	{op: opPROut, sa: prOutReserve, hasSA: true, usage: prOutUsage(prOutReserve)},
	{op: opPROut, sa: prOutRelease, hasSA: true, usage: prOutUsage(prOutRelease)},
	{op: opPROut, sa: prOutClear, hasSA: true, usage: prOutUsage(prOutClear)},
	{op: opPROut, sa: prOutPreempt, hasSA: true, usage: prOutUsage(prOutPreempt)},
	{op: opPROut, sa: prOutPreemptAbort, hasSA: true, usage: prOutUsage(prOutPreemptAbort)},
	{op: opPROut, sa: prOutRegisterIgnore, hasSA: true, usage: prOutUsage(prOutRegisterIgnore)},
	{op: opRead16, usage: rw16Usage(opRead16, 0x18)},
	{op: opCompareAndWrite, usage: []byte{opCompareAndWrite, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x1f, 0x07}},
	{op: opWrite16, usage: rw16Usage(opWrite16, 0x18)},
	{op: opWriteVerify16, usage: rw16Usage(opWriteVerify16, 0x12)},
	{op: opVerify16, usage: rw16Usage(opVerify16, 0x16)},
	{op: opPreFetch16, usage: rw16Usage(opPreFetch16, 0x02)},
	{op: opSyncCache16, usage: rw16Usage(opSyncCache16, 0x02)},
	{op: opWriteSame16, usage: rw16Usage(opWriteSame16, 0x09)},
	{op: opServiceActionIn16, sa: saReadCapacity16, hasSA: true, usage: []byte{opServiceActionIn16, saReadCapacity16, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
	{op: opServiceActionIn16, sa: saGetLBAStatus, hasSA: true, usage: []byte{opServiceActionIn16, saGetLBAStatus, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
	{op: opReportLUNs, usage: []byte{opReportLUNs, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
	{op: opMaintenanceIn, sa: saReportSupportedOps, hasSA: true, usage: []byte{opMaintenanceIn, saReportSupportedOps, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x07}},
	{op: opRead12, usage: []byte{opRead12, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: opWrite12, usage: []byte{opWrite12, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: opWriteVerify12, usage: []byte{opWriteVerify12, 0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
	{op: opVerify12, usage: []byte{opVerify12, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}},
}

func rw16Usage(op, flags byte) []byte {
	return []byte{op, flags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x07}
}

func prInUsage(sa byte) []byte {
	return []byte{opPRIn, sa, 0, 0, 0, 0, 0, 0xff, 0xff, 0x07}
}

func prOutUsage(sa byte) []byte {
	return []byte{opPROut, sa, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x07}
}

// commandTimeouts is the command timeouts descriptor (SPC-4 6.35.4) of
// every command: its length, and neither a nominal nor a recommended time
// (zero: not specified; how long a command takes is the file system's).
func commandTimeouts() []byte {
	d := make([]byte, 12)
	binary.BigEndian.PutUint16(d, 0x0a)
	return d
}

// reportSupportedOpcodes serves REPORT SUPPORTED OPERATION CODES (MAINTENANCE
// IN, service action 0Ch) from supportedCommands.
func reportSupportedOpcodes(cdb []byte) scsiResult {
	if len(cdb) < 12 {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	rctd := cdb[2]&0x80 != 0
	op, sa := cdb[3], binary.BigEndian.Uint16(cdb[4:])
	alloc := int(binary.BigEndian.Uint32(cdb[6:]))
	var b []byte
	switch cdb[2] & 0x07 {
	case 0: // all commands
		b = make([]byte, 4)
		for _, c := range supportedCommands {
			flags := byte(0)
			if c.hasSA {
				flags |= 0x01 // SERVACTV
			}
			if rctd {
				flags |= 0x02 // CTDP
			}
			d := []byte{c.op, 0, 0, 0, 0, flags, 0, byte(len(c.usage))}
			binary.BigEndian.PutUint16(d[2:], c.sa)
			b = append(b, d...)
			if rctd {
				b = append(b, commandTimeouts()...)
			}
		}
		binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	case 1, 2: // one command: 1 without, 2 with a service action
		withSA := cdb[2]&0x07 == 2
		b = []byte{0, 0x01, 0, 0} // SUPPORT 001b: not supported
		for _, c := range supportedCommands {
			if c.op != op {
				continue
			}
			if c.hasSA != withSA {
				return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
			}
			if c.hasSA && c.sa != sa {
				continue
			}
			b[1] = 0x03 // SUPPORT 011b: supported as in the standard
			if rctd {
				b[1] |= 0x80 // CTDP
			}
			binary.BigEndian.PutUint16(b[2:], uint16(len(c.usage)))
			b = append(b, c.usage...)
			if rctd {
				b = append(b, commandTimeouts()...)
			}
			break
		}
		if b[1] == 0x01 && withSA && !opHasServiceActions(op) {
			return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
		}
	default:
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	return scsiResult{in: b[:min(alloc, len(b))]}
}

func opHasServiceActions(op byte) bool {
	for _, c := range supportedCommands {
		if c.op == op {
			return c.hasSA
		}
	}
	return false
}

func checkCondition(key byte, asc uint16) scsiResult {
	return scsiResult{status: statusCheckCondition, sense: senseData(key, asc)}
}
