package iscsi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/drover/terraform-provider-drover/target/store"
)

// ReservationStore keeps each volume's persistent reservations across
// restarts; *store.Store is one. Every change is written (and on disk)
// before the PERSISTENT RESERVE OUT that made it is answered.
type ReservationStore interface {
	Reservations(volume string) (store.Reservations, error)
	PutReservations(volume string, r store.Reservations) error
}

// Persistent reservations (SPC-4 5.13), per logical unit. gotgt v0.2.2's
// implementation rejects every PERSISTENT RESERVE IN and does not enforce
// reservations on reads and writes, so we replace it. A registration belongs
// to the I_T nexus, i.e. the initiator port (initiator name and ISID); with
// a ReservationStore the state is kept across restarts (see docs/target.md
// for what that means for an initiator that reconnects with a new ISID).
type persistentReservations struct {
	// outMu serialises the changes (PERSISTENT RESERVE OUT, removeInitiator),
	// including the write to the store.
	outMu sync.Mutex
	// mu guards st; it is held only to read or replace st, never across
	// I/O, because every command of the unit checks st (conflicts).
	mu sync.Mutex
	st prState

	volume string
	store  ReservationStore // nil: in memory only
}

// prState is the reservation state of one logical unit. Changes are made
// on a copy (clone) that replaces the current state once it is stored.
type prState struct {
	generation uint32
	aptpl      bool
	keys       map[string]uint64 // initiator port → registered key
	holder     string            // initiator port holding the reservation; "" none
	resType    byte              // 0 when there is no reservation
}

func (s prState) clone() prState {
	s.keys = maps.Clone(s.keys)
	if s.keys == nil {
		s.keys = map[string]uint64{}
	}
	return s
}

// Reservation types.
const (
	prWriteExclusive    = 1
	prExclusiveAccess   = 3
	prWriteExclusiveRO  = 5
	prExclusiveAccessRO = 6
	prWriteExclusiveAR  = 7
	prExclusiveAccessAR = 8
)

// PERSISTENT RESERVE IN and OUT service actions.
const (
	prInReadKeys        = 0x00
	prInReadReservation = 0x01
	prInReportCaps      = 0x02
	prInReadFullStatus  = 0x03

	prOutRegister       = 0x00
	prOutReserve        = 0x01
	prOutRelease        = 0x02
	prOutClear          = 0x03
	prOutPreempt        = 0x04
	prOutPreemptAbort   = 0x05
	prOutRegisterIgnore = 0x06
)

const (
	ascInvalidPRRelease  = 0x2604
	ascParamListLenError = 0x1a00
)

// allRegistrants reports whether every registrant holds a reservation of
// type t (the "all registrants" types).
func allRegistrants(t byte) bool { return t == prWriteExclusiveAR || t == prExclusiveAccessAR }

// registrantsHaveAccess reports whether a reservation of type t lets every
// registrant in ("registrants only" and "all registrants").
func registrantsHaveAccess(t byte) bool { return t >= prWriteExclusiveRO && t <= prExclusiveAccessAR }

func validPRType(t byte) bool {
	switch t {
	case prWriteExclusive, prExclusiveAccess, prWriteExclusiveRO, prExclusiveAccessRO, prWriteExclusiveAR, prExclusiveAccessAR:
		return true
	}
	return false
}

func newPersistentReservations(volume string, rs ReservationStore) (*persistentReservations, error) {
	r := &persistentReservations{volume: volume, store: rs, st: prState{keys: map[string]uint64{}}}
	if rs == nil {
		return r, nil
	}
	kept, err := rs.Reservations(volume)
	if err != nil {
		return nil, fmt.Errorf("read persistent reservations: %w", err)
	}
	r.st = stateFromStore(kept)
	return r, nil
}

func stateFromStore(k store.Reservations) prState {
	st := prState{generation: k.Generation, aptpl: k.APTPL, keys: map[string]uint64{}, holder: k.Holder, resType: k.Type}
	for _, g := range k.Registrations {
		st.keys[g.Port] = g.Key
	}
	return st
}

func (s prState) toStore() store.Reservations {
	k := store.Reservations{Generation: s.generation, APTPL: s.aptpl, Holder: s.holder, Type: s.resType}
	for _, p := range slices.Sorted(maps.Keys(s.keys)) {
		k.Registrations = append(k.Registrations, store.Registration{Port: p, Key: s.keys[p]})
	}
	return k
}

// isWriteOp reports whether an opcode modifies the medium, for reservation checks.
func isWriteOp(op byte) bool {
	switch op {
	case opWrite6, opWrite10, opWrite12, opWrite16,
		opWriteVerify10, opWriteVerify12, opWriteVerify16,
		opWriteSame10, opWriteSame16, opUnmap,
		opSyncCache10, opSyncCache16,
		opCompareAndWrite, opORWrite16, opWriteAtomic16,
		opModeSelect6, opModeSelect10, opFormatUnit, opStartStopUnit:
		return true
	}
	return false
}

// conflicts reports whether a command from port p must be refused with
// RESERVATION CONFLICT.
func (r *persistentReservations) conflicts(p string, op byte) bool {
	switch op {
	case opInquiry, opReportLUNs, opRequestSense, opPRIn, opPROut,
		opTestUnitReady, opReadCapacity10, opServiceActionIn16, opMaintenanceIn, opLogSense:
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st := &r.st
	if st.resType == 0 || st.holder == p {
		return false
	}
	if _, registered := st.keys[p]; registered && registrantsHaveAccess(st.resType) {
		return false
	}
	switch st.resType {
	case prWriteExclusive, prWriteExclusiveRO, prWriteExclusiveAR:
		return isWriteOp(op)
	}
	return true
}

// held reports whether any persistent reservation exists (SPC-2 RESERVE then conflicts).
func (r *persistentReservations) held() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.st.resType != 0
}

func (r *persistentReservations) in(cdb []byte) scsiResult {
	if len(cdb) < 10 {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	alloc := int(binary.BigEndian.Uint16(cdb[7:]))
	r.mu.Lock()
	defer r.mu.Unlock()
	st := &r.st
	var b []byte
	switch cdb[1] & 0x1f {
	case prInReadKeys:
		b = make([]byte, 8)
		binary.BigEndian.PutUint32(b, st.generation)
		for _, p := range slices.Sorted(maps.Keys(st.keys)) {
			b = binary.BigEndian.AppendUint64(b, st.keys[p])
		}
	case prInReadReservation:
		b = make([]byte, 8)
		binary.BigEndian.PutUint32(b, st.generation)
		if st.resType != 0 {
			d := make([]byte, 16)
			if !allRegistrants(st.resType) {
				binary.BigEndian.PutUint64(d, st.keys[st.holder])
			}
			d[13] = st.resType
			b = append(b, d...)
		}
	case prInReportCaps:
		b = make([]byte, 8)
		binary.BigEndian.PutUint16(b, 8)
		if r.store != nil {
			b[2] = 0x01 // PTPL_C: persist through power loss capable
		}
		b[3] = 0x80 // TMV: the type mask below is valid
		if st.aptpl {
			b[3] |= 0x01 // PTPL_A
		}
		b[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02
		b[5] = 0x01
		return scsiResult{in: b[:min(alloc, len(b))]}
	case prInReadFullStatus:
		b = make([]byte, 8)
		binary.BigEndian.PutUint32(b, st.generation)
		for _, p := range slices.Sorted(maps.Keys(st.keys)) {
			b = append(b, fullStatusDescriptor(st, p)...)
		}
	default:
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	binary.BigEndian.PutUint32(b[4:], uint32(len(b)-8))
	return scsiResult{in: b[:min(alloc, len(b))]}
}

// fullStatusDescriptor is port p's descriptor of READ FULL STATUS (SPC-4
// 6.14.5) with an iSCSI TransportID of format 01b (name and ISID).
func fullStatusDescriptor(st *prState, p string) []byte {
	d := make([]byte, 24)
	binary.BigEndian.PutUint64(d, st.keys[p])
	if st.resType != 0 && (st.holder == p || allRegistrants(st.resType)) {
		d[12] = 0x01 // R_HOLDER
		d[13] = st.resType
	}
	binary.BigEndian.PutUint16(d[18:], 1) // relative target port
	name := scsiName(p)
	if len(name) < 16 {
		name = append(name, make([]byte, 16-len(name))...)
	}
	tid := []byte{0x40 | 0x05, 0, 0, 0}
	binary.BigEndian.PutUint16(tid[2:], uint16(len(name)))
	tid = append(tid, name...)
	binary.BigEndian.PutUint32(d[20:], uint32(len(tid)))
	return append(d, tid...)
}

// prOutRequest is a decoded PERSISTENT RESERVE OUT.
type prOutRequest struct {
	port          string // the I_T nexus that sent it
	scope, typ    byte
	key, saKey    uint64
	aptpl         bool
	serviceAction byte
}

// prOutAction is one service action of PERSISTENT RESERVE OUT. It changes
// st (a copy of the current state) and returns the answer; st replaces the
// current state if the answer is GOOD.
type prOutAction func(st *prState, o prOutRequest) scsiResult

// prOutActions maps the service actions we serve to their functions, as
// tgtd's spc.c does; REGISTER AND MOVE is not supported.
var prOutActions = map[byte]prOutAction{
	prOutRegister:       prRegister,
	prOutRegisterIgnore: prRegister,
	prOutReserve:        prReserve,
	prOutRelease:        prRelease,
	prOutClear:          prClear,
	prOutPreempt:        prPreempt,
	prOutPreemptAbort:   prPreempt,
}

var reservationConflict = scsiResult{status: statusReservationConflict}

// out serves PERSISTENT RESERVE OUT from port p: the service action runs on
// a copy of the state, which is stored (when there is a store) before it
// replaces the current state and the command is answered.
func (r *persistentReservations) out(p string, cdb, param []byte) scsiResult {
	if len(cdb) < 10 {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	sa := cdb[1] & 0x1f
	action, ok := prOutActions[sa]
	if !ok {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if binary.BigEndian.Uint32(cdb[5:]) != 24 || len(param) < 24 {
		return checkCondition(senseIllegalRequest, ascParamListLenError)
	}
	o := prOutRequest{
		port: p, serviceAction: sa,
		scope: cdb[2] >> 4, typ: cdb[2] & 0x0f,
		key: binary.BigEndian.Uint64(param), saKey: binary.BigEndian.Uint64(param[8:]),
		aptpl: param[20]&0x01 != 0,
	}
	if param[20]&0x0c != 0 { // SPEC_I_PT, ALL_TG_PT: not supported
		return checkCondition(senseIllegalRequest, ascInvalidFieldInParm)
	}
	if o.aptpl && r.store == nil && (sa == prOutRegister || sa == prOutRegisterIgnore) {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInParm)
	}
	return r.change(func(st *prState) scsiResult { return action(st, o) })
}

// change runs fn on a copy of the state and, if it answers GOOD, commits
// the copy.
func (r *persistentReservations) change(fn func(st *prState) scsiResult) scsiResult {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	r.mu.Lock()
	next := r.st.clone()
	r.mu.Unlock()
	res := fn(&next)
	if res.status != statusGood {
		return res
	}
	if err := r.commit(next); err != nil {
		return checkCondition(senseHardwareError, ascInternalFailure)
	}
	return res
}

// commit stores next, when there is a store, and makes it current; outMu
// is held.
func (r *persistentReservations) commit(next prState) error {
	if r.store != nil {
		if err := r.store.PutReservations(r.volume, next.toStore()); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.st = next
	r.mu.Unlock()
	return nil
}

// removeInitiator drops the registrations of all of an initiator's ports
// (its sessions past and present), as a PREEMPT AND ABORT of their keys
// would, and reports whether there were any.
func (r *persistentReservations) removeInitiator(initiator string) (bool, error) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	r.mu.Lock()
	next := r.st.clone()
	r.mu.Unlock()
	removed := false
	for p := range r.st.keys {
		if initiatorOf(p) == initiator {
			next.unregister(p)
			removed = true
		}
	}
	if !removed {
		return false, nil
	}
	next.generation++
	if err := r.commit(next); err != nil {
		return false, fmt.Errorf("remove registrations of %s from volume %s: %w", initiator, r.volume, err)
	}
	return true, nil
}

// initiatorOf is the initiator name of an initiator port name (name,i,0xISID).
func initiatorOf(port string) string {
	name, _, _ := strings.Cut(port, ",i,0x")
	return name
}

// RemoveInitiator drops every persistent-reservation registration of an
// initiator (all its I_T nexuses, whatever their ISID) on every exported
// volume, in the store too, as a PREEMPT AND ABORT of its keys by another
// initiator would; a reservation it held ends (one for all registrants
// stays while other registrants remain). It returns the volumes it changed.
// Fences call it: the initiator's sessions are closed by the caller.
func (e *Engine) RemoveInitiator(initiator string) ([]string, error) {
	e.mu.Lock()
	vols := slices.Collect(maps.Values(e.volumes))
	e.mu.Unlock()
	slices.SortFunc(vols, func(a, b *volume) int { return strings.Compare(a.name, b.name) })
	var changed []string
	var errs []error
	for _, v := range vols {
		ok, err := v.unit.pr.removeInitiator(initiator)
		if err != nil {
			errs = append(errs, err)
		}
		if ok {
			changed = append(changed, v.name)
		}
	}
	return changed, errors.Join(errs...)
}

// prRegister serves REGISTER and REGISTER AND IGNORE EXISTING KEY.
func prRegister(st *prState, o prOutRequest) scsiResult {
	cur, registered := st.keys[o.port]
	if o.serviceAction == prOutRegister && ((registered && o.key != cur) || (!registered && o.key != 0)) {
		return reservationConflict
	}
	if o.saKey == 0 {
		if registered {
			st.unregister(o.port)
			st.generation++
		}
		return scsiResult{}
	}
	st.keys[o.port] = o.saKey
	st.aptpl = o.aptpl
	st.generation++
	return scsiResult{}
}

// registered checks that the sender is registered with the key it sent,
// as every service action but the REGISTERs needs.
func (st *prState) registered(o prOutRequest) bool {
	cur, ok := st.keys[o.port]
	return ok && cur == o.key
}

func prReserve(st *prState, o prOutRequest) scsiResult {
	if !st.registered(o) {
		return reservationConflict
	}
	if o.scope != 0 || !validPRType(o.typ) {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if st.resType == 0 {
		st.holder, st.resType = o.port, o.typ
		return scsiResult{}
	}
	if (st.holder == o.port || allRegistrants(st.resType)) && st.resType == o.typ {
		return scsiResult{}
	}
	return reservationConflict
}

func prRelease(st *prState, o prOutRequest) scsiResult {
	if !st.registered(o) {
		return reservationConflict
	}
	if st.resType == 0 || (st.holder != o.port && !allRegistrants(st.resType)) {
		return scsiResult{}
	}
	if st.resType != o.typ || o.scope != 0 {
		return checkCondition(senseIllegalRequest, ascInvalidPRRelease)
	}
	st.holder, st.resType = "", 0
	return scsiResult{}
}

func prClear(st *prState, o prOutRequest) scsiResult {
	if !st.registered(o) {
		return reservationConflict
	}
	clear(st.keys)
	st.holder, st.resType = "", 0
	st.generation++
	return scsiResult{}
}

// prPreempt serves PREEMPT and PREEMPT AND ABORT. The abort part (ending
// the preempted nexuses' tasks) is not done: commands run to completion.
func prPreempt(st *prState, o prOutRequest) scsiResult {
	if !st.registered(o) {
		return reservationConflict
	}
	if o.scope != 0 || !validPRType(o.typ) {
		return checkCondition(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	switch {
	case st.resType != 0 && allRegistrants(st.resType) && o.saKey == 0:
		// Every other registration goes; the sender holds the new one.
		for q := range st.keys {
			if q != o.port {
				delete(st.keys, q)
			}
		}
		st.holder, st.resType = o.port, o.typ
		st.generation++
		return scsiResult{}
	case st.resType != 0 && !allRegistrants(st.resType) && st.keys[st.holder] == o.saKey:
		// The holder's key: its registrations go and the sender takes over.
		for q, k := range st.keys {
			if k == o.saKey && q != o.port {
				delete(st.keys, q)
			}
		}
		st.holder, st.resType = o.port, o.typ
		st.generation++
		return scsiResult{}
	case o.saKey == 0:
		return checkCondition(senseIllegalRequest, ascInvalidFieldInParm)
	}
	found := false
	for q, k := range st.keys {
		if k == o.saKey {
			found = true
			if q != o.port {
				st.unregister(q)
			}
		}
	}
	if !found {
		return reservationConflict
	}
	st.generation++
	return scsiResult{}
}

// unregister removes a registration; the holder of a reservation that is not
// for all registrants loses it, and an all-registrants reservation ends with
// its last registrant.
func (st *prState) unregister(p string) {
	delete(st.keys, p)
	if st.resType == 0 {
		return
	}
	if allRegistrants(st.resType) {
		if len(st.keys) == 0 {
			st.holder, st.resType = "", 0
		} else if st.holder == p {
			st.holder = slices.Min(slices.Collect(maps.Keys(st.keys)))
		}
		return
	}
	if st.holder == p {
		st.holder, st.resType = "", 0
	}
}
