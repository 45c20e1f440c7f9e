package iscsi

import (
	"encoding/binary"
	"slices"
	"sync"
)

// Persistent reservations (SPC-4 5.13), kept in memory per logical unit.
// gotgt v0.2.2's implementation rejects every PERSISTENT RESERVE IN and does
// not enforce reservations on reads and writes, so we replace it. Registrations
// belong to the initiator port (initiator name and ISID), so they survive a
// reconnect; they do not survive a restart (APTPL is not supported).
type persistentReservations struct {
	mu         sync.Mutex
	generation uint32
	keys       map[string]uint64 // initiator port → registered key
	holder     string            // initiator port holding the reservation; "" none
	resType    byte              // 0 when there is no reservation
}

const (
	prWriteExclusive     = 1
	prExclusiveAccess    = 3
	prWriteExclusiveRO   = 5
	prExclusiveAccessRO  = 6
	prWriteExclusiveAR   = 7
	prExclusiveAccessAR  = 8
	ascInvalidPRRelease  = 0x2604
	ascParamListLenError = 0x1a00
)

func allRegistrants(t byte) bool {
	return t == prWriteExclusiveRO || t == prExclusiveAccessRO || t == prWriteExclusiveAR || t == prExclusiveAccessAR
}

func validPRType(t byte) bool {
	switch t {
	case prWriteExclusive, prExclusiveAccess, prWriteExclusiveRO, prExclusiveAccessRO, prWriteExclusiveAR, prExclusiveAccessAR:
		return true
	}
	return false
}

// isWriteOp reports whether an opcode modifies the medium, for reservation checks.
func isWriteOp(op byte) bool {
	switch op {
	case 0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e, 0x41, 0x93, 0x42, 0x35, 0x91, 0x89, 0x8b, 0x9c, 0x15, 0x55, 0x04, 0x1b:
		return true
	}
	return false
}

// conflicts reports whether a command from port p must be refused with
// RESERVATION CONFLICT.
func (r *persistentReservations) conflicts(p string, op byte) bool {
	switch op {
	case 0x12, 0xa0, 0x03, 0x5e, 0x5f, 0x00, 0x25, 0x9e, 0xa3, 0x4d:
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.resType == 0 || r.holder == p {
		return false
	}
	_, registered := r.keys[p]
	if allRegistrants(r.resType) && registered {
		return false
	}
	switch r.resType {
	case prWriteExclusive, prWriteExclusiveRO, prWriteExclusiveAR:
		return isWriteOp(op)
	}
	return true
}

// held reports whether any persistent reservation exists (SPC-2 RESERVE then conflicts).
func (r *persistentReservations) held() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resType != 0
}

func (r *persistentReservations) in(cdb []byte) scsiResult {
	alloc := int(binary.BigEndian.Uint16(cdb[7:]))
	r.mu.Lock()
	defer r.mu.Unlock()
	var b []byte
	switch cdb[1] & 0x1f {
	case 0: // READ KEYS
		b = make([]byte, 8)
		binary.BigEndian.PutUint32(b, r.generation)
		ports := make([]string, 0, len(r.keys))
		for p := range r.keys {
			ports = append(ports, p)
		}
		slices.Sort(ports)
		for _, p := range ports {
			b = binary.BigEndian.AppendUint64(b, r.keys[p])
		}
		binary.BigEndian.PutUint32(b[4:], uint32(len(b)-8))
	case 1: // READ RESERVATION
		b = make([]byte, 8)
		binary.BigEndian.PutUint32(b, r.generation)
		if r.resType != 0 {
			d := make([]byte, 16)
			if !allRegistrants(r.resType) || r.resType == prWriteExclusiveRO || r.resType == prExclusiveAccessRO {
				binary.BigEndian.PutUint64(d, r.keys[r.holder])
			}
			d[13] = r.resType
			b = append(b, d...)
			binary.BigEndian.PutUint32(b[4:], 16)
		}
	case 2: // REPORT CAPABILITIES
		b = make([]byte, 8)
		binary.BigEndian.PutUint16(b, 8)
		b[3] = 0x80 // TMV: the type mask below is valid
		b[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02
		b[5] = 0x01
	default:
		return scsiResult{status: statusCheckCondition, sense: senseData(senseIllegalRequest, ascInvalidFieldInCDB)}
	}
	return scsiResult{in: b[:min(alloc, len(b))]}
}

func (r *persistentReservations) out(p string, cdb, param []byte) scsiResult {
	fail := func(key byte, asc uint16) scsiResult {
		return scsiResult{status: statusCheckCondition, sense: senseData(key, asc)}
	}
	conflict := scsiResult{status: statusReservationConflict}
	sa := cdb[1] & 0x1f
	scope, typ := cdb[2]>>4, cdb[2]&0x0f
	plen := binary.BigEndian.Uint32(cdb[5:])
	if sa == 7 { // REGISTER AND MOVE
		return fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if sa > 7 {
		return fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if plen != 24 || len(param) < 24 {
		return fail(senseIllegalRequest, ascParamListLenError)
	}
	key := binary.BigEndian.Uint64(param)
	saKey := binary.BigEndian.Uint64(param[8:])
	if param[20]&0x0d != 0 { // SPEC_I_PT, ALL_TG_PT, APTPL: not supported
		return fail(senseIllegalRequest, ascInvalidFieldInParm)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur, registered := r.keys[p]
	switch sa {
	case 0, 6: // REGISTER, REGISTER AND IGNORE EXISTING KEY
		if sa == 0 && ((registered && key != cur) || (!registered && key != 0)) {
			return conflict
		}
		if saKey == 0 {
			if registered {
				r.unregister(p)
				r.generation++
			}
			return scsiResult{}
		}
		r.keys[p] = saKey
		r.generation++
		return scsiResult{}
	}
	if !registered || key != cur {
		return conflict
	}
	switch sa {
	case 1: // RESERVE
		if scope != 0 || !validPRType(typ) {
			return fail(senseIllegalRequest, ascInvalidFieldInCDB)
		}
		if r.resType == 0 {
			r.holder, r.resType = p, typ
			return scsiResult{}
		}
		if (r.holder == p || allRegistrants(r.resType)) && r.resType == typ {
			return scsiResult{}
		}
		return conflict
	case 2: // RELEASE
		if r.resType == 0 || (r.holder != p && !allRegistrants(r.resType)) {
			return scsiResult{}
		}
		if r.resType != typ || scope != 0 {
			return fail(senseIllegalRequest, ascInvalidPRRelease)
		}
		r.holder, r.resType = "", 0
		return scsiResult{}
	case 3: // CLEAR
		clear(r.keys)
		r.holder, r.resType = "", 0
		r.generation++
		return scsiResult{}
	case 4, 5: // PREEMPT, PREEMPT AND ABORT
		if scope != 0 || !validPRType(typ) {
			return fail(senseIllegalRequest, ascInvalidFieldInCDB)
		}
		if r.resType != 0 && allRegistrants(r.resType) && saKey == 0 {
			for q := range r.keys {
				if q != p {
					delete(r.keys, q)
				}
			}
			r.holder, r.resType = p, typ
			r.generation++
			return scsiResult{}
		}
		if r.resType != 0 && !allRegistrants(r.resType) && r.keys[r.holder] == saKey {
			for q, k := range r.keys {
				if k == saKey && q != p {
					delete(r.keys, q)
				}
			}
			r.holder, r.resType = p, typ
			r.generation++
			return scsiResult{}
		}
		if saKey == 0 {
			return fail(senseIllegalRequest, ascInvalidFieldInParm)
		}
		found := false
		for q, k := range r.keys {
			if k == saKey {
				found = true
				if q != p {
					r.unregister(q)
				}
			}
		}
		if !found {
			return conflict
		}
		r.generation++
		return scsiResult{}
	}
	return fail(senseIllegalRequest, ascInvalidFieldInCDB)
}

// unregister removes a registration; the holder of a reservation that is not
// for all registrants loses it, and an all-registrants reservation ends with
// its last registrant.
func (r *persistentReservations) unregister(p string) {
	delete(r.keys, p)
	if r.resType == 0 {
		return
	}
	if allRegistrants(r.resType) {
		if len(r.keys) == 0 {
			r.holder, r.resType = "", 0
		} else if r.holder == p {
			for q := range r.keys {
				r.holder = q
				break
			}
		}
		return
	}
	if r.holder == p {
		r.holder, r.resType = "", 0
	}
}
