package iscsi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	uuid "github.com/satori/go.uuid"

	"github.com/gostor/gotgt/pkg/api"
)

// session is one connection in the full feature phase (MaxConnections=1, so
// session and connection are the same thing). One goroutine reads PDUs and
// collects write data; each complete SCSI command runs in its own goroutine,
// at most cmdWindow at a time, and writes its own response.
type session struct {
	e         *Engine
	vol       *volume // nil for a discovery session
	nc        net.Conn
	br        *bufio.Reader
	initiator string
	targetIQN string
	remote    string
	isid      [6]byte
	since     time.Time
	params    sessionParams
	nexus     *nexus

	// wmu serialises writes to the connection and guards statSN.
	wmu    sync.Mutex
	statSN uint32

	expCmdSN atomic.Uint32
	sem      chan struct{}
	inflight sync.WaitGroup

	// pending and nextTTT belong to the reader goroutine.
	pending map[uint32]*writeTask
	nextTTT uint32

	closeOnce sync.Once
	closed    chan struct{}
	done      chan struct{} // closed when run has returned
}

// writeTask is a SCSI command waiting for its data-out.
type writeTask struct {
	hdr      [bhsLen]byte
	buf      []byte
	release  func()
	received uint32
	ttt      uint32
	r2tSN    uint32
}

func (s *session) close() {
	s.closeOnce.Do(func() {
		close(s.closed)
		s.nc.Close()
	})
}

func (s *session) run() {
	defer close(s.done)
	defer s.close()
	if s.vol != nil {
		port := fmt.Sprintf("%s,i,0x%x", s.initiator, s.isid)
		s.nexus = &nexus{itn: &api.ITNexus{ID: uuid.NewV1(), Tag: port}, port: port}
		s.vol.unit.addNexus(s.nexus)
		defer s.vol.unit.removeNexus(s.nexus)
	}
	err := s.readLoop()
	s.close()
	s.inflight.Wait()
	s.dropPending()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		s.e.log.Info("iscsi connection closed", "remote", s.remote, "initiator", s.initiator, "reason", err)
	}
}

func (s *session) dropPending() {
	for itt, t := range s.pending {
		t.release()
		delete(s.pending, itt)
	}
}

func (s *session) maxCmdSN() uint32 { return s.expCmdSN.Load() + cmdWindow - 1 }

// acceptCmdSN applies command numbering (RFC 7143 4.2.2.1): non-immediate
// commands outside the window are dropped.
func (s *session) acceptCmdSN(h *[bhsLen]byte) bool {
	if h[0]&flagImmedate != 0 {
		return true
	}
	sn := binary.BigEndian.Uint32(h[24:])
	exp := s.expCmdSN.Load()
	if sn32Less(sn, exp) || sn32Less(s.maxCmdSN(), sn) {
		return false
	}
	s.expCmdSN.Store(sn + 1)
	return true
}

func (s *session) readLoop() error {
	var h [bhsLen]byte
	scratch := make([]byte, 8192)
	for {
		if _, err := io.ReadFull(s.br, h[:]); err != nil {
			return err
		}
		ahs := int(h[4]) * 4
		dlen := int(h[5])<<16 | int(h[6])<<8 | int(h[7])
		if dlen > maxDataSeg {
			return fmt.Errorf("data segment of %d bytes", dlen)
		}
		if ahs > 0 {
			if _, err := s.br.Discard(ahs); err != nil {
				return err
			}
		}
		op := h[0] & 0x3f
		switch op {
		case opSCSICmd:
			if err := s.onCommand(&h, dlen); err != nil {
				return err
			}
			continue
		case opDataOut:
			if err := s.onDataOut(&h, dlen); err != nil {
				return err
			}
			continue
		}
		if cap(scratch) < dlen {
			scratch = make([]byte, dlen)
		}
		data := scratch[:dlen]
		if err := s.readData(data); err != nil {
			return err
		}
		switch op {
		case opNopOut:
			if !s.acceptCmdSN(&h) {
				continue
			}
			if binary.BigEndian.Uint32(h[16:]) != reservedTag {
				s.sendNopIn(&h, data)
			}
		case opTMFReq:
			if !s.acceptCmdSN(&h) {
				continue
			}
			if err := s.onTMF(&h); err != nil {
				return err
			}
		case opTextReq:
			if !s.acceptCmdSN(&h) {
				continue
			}
			s.onText(&h, data)
		case opLogoutReq:
			if !s.acceptCmdSN(&h) {
				continue
			}
			s.inflight.Wait()
			s.dropPending()
			var r [bhsLen]byte
			r[0], r[1] = opLogoutResp, 0x80
			copy(r[16:20], h[16:20])
			s.send(&r, nil, true)
			return nil
		default:
			reason := byte(0x05) // command not supported
			if op == opSNACKReq {
				reason = 0x04 // protocol error: no SNACK at error recovery level 0
			}
			s.sendReject(&h, reason)
		}
	}
}

// readData reads a data segment and its padding.
func (s *session) readData(b []byte) error {
	if _, err := io.ReadFull(s.br, b); err != nil {
		return err
	}
	if pad := (4 - len(b)%4) % 4; pad > 0 {
		if _, err := s.br.Discard(pad); err != nil {
			return err
		}
	}
	return nil
}

func (s *session) discard(n int) error {
	_, err := s.br.Discard((n + 3) &^ 3)
	return err
}

func (s *session) onCommand(h *[bhsLen]byte, dlen int) error {
	if s.vol == nil || !s.acceptCmdSN(h) {
		if err := s.discard(dlen); err != nil {
			return err
		}
		if s.vol == nil {
			s.sendReject(h, 0x05)
		}
		return nil
	}
	write := h[1]&0x20 != 0
	edtl := binary.BigEndian.Uint32(h[20:])
	if !write || edtl == 0 {
		if err := s.discard(dlen); err != nil {
			return err
		}
		s.dispatch(h, nil, func() {})
		return nil
	}
	if edtl > 64<<20 {
		if err := s.discard(dlen); err != nil {
			return err
		}
		s.dispatchError(h, senseData(senseIllegalRequest, ascInvalidFieldInCDB))
		return nil
	}
	buf, release := getBuffer(int(edtl))
	imm := min(uint32(dlen), edtl)
	if uint32(dlen) > edtl { // more immediate data than expected: keep what fits
		tmp := make([]byte, dlen)
		if err := s.readData(tmp); err != nil {
			release()
			return err
		}
		copy(buf, tmp)
	} else if err := s.readData(buf[:imm]); err != nil {
		release()
		return err
	}
	if imm == edtl {
		s.dispatch(h, buf, release)
		return nil
	}
	t := &writeTask{hdr: *h, buf: buf, release: release, received: imm, ttt: reservedTag}
	itt := binary.BigEndian.Uint32(h[16:])
	if old, ok := s.pending[itt]; ok {
		old.release()
	}
	s.pending[itt] = t
	if h[1]&flagFinal != 0 { // no unsolicited data follows
		s.sendR2T(t)
	}
	return nil
}

func (s *session) onDataOut(h *[bhsLen]byte, dlen int) error {
	itt := binary.BigEndian.Uint32(h[16:])
	t := s.pending[itt]
	off := binary.BigEndian.Uint32(h[40:])
	if t == nil || uint64(off)+uint64(dlen) > uint64(len(t.buf)) {
		if err := s.discard(dlen); err != nil {
			return err
		}
		if t != nil {
			s.sendReject(h, 0x04) // data beyond the expected length
		}
		return nil
	}
	if err := s.readData(t.buf[off : off+uint32(dlen)]); err != nil {
		return err
	}
	t.received += uint32(dlen)
	if h[1]&flagFinal == 0 {
		return nil
	}
	if t.received >= uint32(len(t.buf)) {
		delete(s.pending, itt)
		s.dispatch(&t.hdr, t.buf, t.release)
		return nil
	}
	s.sendR2T(t)
	return nil
}

func (s *session) sendR2T(t *writeTask) {
	s.nextTTT++
	if s.nextTTT == reservedTag {
		s.nextTTT = 1
	}
	t.ttt = s.nextTTT
	var r [bhsLen]byte
	r[0], r[1] = opR2T, 0x80
	copy(r[8:20], t.hdr[8:20]) // LUN, ITT
	binary.BigEndian.PutUint32(r[20:], t.ttt)
	binary.BigEndian.PutUint32(r[36:], t.r2tSN)
	t.r2tSN++
	binary.BigEndian.PutUint32(r[40:], t.received)
	binary.BigEndian.PutUint32(r[44:], min(s.params.maxBurst, uint32(len(t.buf))-t.received))
	s.send(&r, nil, false)
}

// dispatch runs a complete command in its own goroutine once a slot is free.
func (s *session) dispatch(h *[bhsLen]byte, out []byte, release func()) {
	hdr := *h
	select {
	case s.sem <- struct{}{}:
	case <-s.closed:
		release()
		return
	}
	s.inflight.Add(1)
	go func() {
		defer s.inflight.Done()
		defer func() { <-s.sem }()
		defer release()
		defer func() {
			if r := recover(); r != nil {
				s.e.log.Error("iscsi command panicked", "remote", s.remote, "panic", r)
				s.close()
			}
		}()
		s.execute(&hdr, out)
	}()
}

func (s *session) dispatchError(h *[bhsLen]byte, sense []byte) {
	hdr := *h
	s.respond(&hdr, scsiResult{status: statusCheckCondition, sense: sense}, 0)
}

func (s *session) execute(h *[bhsLen]byte, out []byte) {
	edtl := binary.BigEndian.Uint32(h[20:])
	cdb := make([]byte, 16)
	copy(cdb, h[32:48])
	req := &scsiRequest{
		cdb:   cdb,
		lun:   decodeLUN(binary.BigEndian.Uint64(h[8:16])),
		edtl:  edtl,
		read:  h[1]&0x40 != 0,
		write: h[1]&0x20 != 0,
		out:   out,
		nexus: s.nexus,
	}
	if req.read && req.write {
		s.respond(h, scsiResult{status: statusCheckCondition, sense: senseData(senseIllegalRequest, ascInvalidFieldInCDB)}, 0)
		return
	}
	res := s.vol.unit.execute(req)
	if res.release != nil {
		defer res.release()
	}
	s.respond(h, res, wantedOut(cdb))
}

// wantedOut is how many bytes of data-out a READ/WRITE-family CDB asks for,
// or -1 when we do not compute it; it sets the residual of write commands.
func wantedOut(cdb []byte) int {
	switch cdb[0] {
	case 0x0a, 0x2a, 0xaa, 0x8a, 0x2e, 0xae, 0x8e:
		_, n, _, err := rwFields(cdb)
		if err == nil {
			return int(n) << blockShift
		}
	}
	return -1
}

// respond sends data-in (with the status in its last PDU when the command
// succeeded) or a SCSI Response, with residuals against the expected length.
func (s *session) respond(h *[bhsLen]byte, res scsiResult, wantOut int) {
	edtl := binary.BigEndian.Uint32(h[20:])
	read := h[1]&0x40 != 0
	var flags byte
	var resid uint32
	in := res.in
	if read {
		switch {
		case uint32(len(in)) > edtl:
			flags, resid = 0x04, uint32(len(in))-edtl
			in = in[:edtl]
		case uint32(len(in)) < edtl:
			flags, resid = 0x02, edtl-uint32(len(in))
		}
	} else if len(in) > 0 {
		flags, resid = 0x04, uint32(len(in))
		in = nil
	} else if wantOut >= 0 && h[1]&0x20 != 0 {
		switch {
		case uint32(wantOut) > edtl:
			flags, resid = 0x04, uint32(wantOut)-edtl
		case uint32(wantOut) < edtl:
			flags, resid = 0x02, edtl-uint32(wantOut)
		}
	}
	if res.status != statusGood {
		in = nil
		if read && edtl > 0 {
			flags, resid = 0x02, edtl
		}
	}
	if len(in) == 0 {
		var r [bhsLen]byte
		r[0], r[1], r[3] = opSCSIResp, 0x80|flags, res.status
		copy(r[16:20], h[16:20])
		binary.BigEndian.PutUint32(r[44:], resid)
		var data []byte
		if len(res.sense) > 0 {
			data = make([]byte, 2+len(res.sense))
			binary.BigEndian.PutUint16(data, uint16(len(res.sense)))
			copy(data[2:], res.sense)
		}
		s.send(&r, data, true)
		return
	}
	s.sendDataIn(h, in, res.status, flags, resid)
}

// sendDataIn writes the whole data-in sequence with one writev.
func (s *session) sendDataIn(h *[bhsLen]byte, in []byte, status, flags byte, resid uint32) {
	seg := int(s.params.maxSend)
	n := (len(in) + seg - 1) / seg
	hdrs := make([]byte, n*bhsLen)
	bufs := make(net.Buffers, 0, 2*n+1)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	exp, maxSN := s.expCmdSN.Load(), s.maxCmdSN()
	for i := 0; i < n; i++ {
		r := hdrs[i*bhsLen : (i+1)*bhsLen]
		chunk := in[i*seg : min((i+1)*seg, len(in))]
		r[0] = opDataIn
		copy(r[8:20], h[8:20])
		binary.BigEndian.PutUint32(r[20:], reservedTag)
		binary.BigEndian.PutUint32(r[28:], exp)
		binary.BigEndian.PutUint32(r[32:], maxSN)
		binary.BigEndian.PutUint32(r[36:], uint32(i))
		binary.BigEndian.PutUint32(r[40:], uint32(i*seg))
		r[5], r[6], r[7] = byte(len(chunk)>>16), byte(len(chunk)>>8), byte(len(chunk))
		if i == n-1 {
			r[1] = 0x80 | 0x01 | flags
			r[3] = status
			binary.BigEndian.PutUint32(r[24:], s.statSN)
			s.statSN++
			binary.BigEndian.PutUint32(r[44:], resid)
		}
		bufs = append(bufs, r, chunk)
		if pad := (4 - len(chunk)%4) % 4; pad > 0 {
			bufs = append(bufs, zeroPad[:pad])
		}
	}
	if _, err := bufs.WriteTo(s.nc); err != nil {
		s.close()
	}
}

// send writes one target PDU, filling in StatSN (advancing it when the PDU
// carries status), ExpCmdSN and MaxCmdSN.
func (s *session) send(r *[bhsLen]byte, data []byte, status bool) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	binary.BigEndian.PutUint32(r[24:], s.statSN)
	if status {
		s.statSN++
	}
	binary.BigEndian.PutUint32(r[28:], s.expCmdSN.Load())
	binary.BigEndian.PutUint32(r[32:], s.maxCmdSN())
	r[4] = 0
	r[5], r[6], r[7] = byte(len(data)>>16), byte(len(data)>>8), byte(len(data))
	if err := writePDU(s.nc, r, data); err != nil {
		s.close()
	}
}

func (s *session) sendNopIn(h *[bhsLen]byte, data []byte) {
	var r [bhsLen]byte
	r[0], r[1] = opNopIn, 0x80
	copy(r[8:20], h[8:20])
	binary.BigEndian.PutUint32(r[20:], reservedTag)
	s.send(&r, append([]byte(nil), data...), true)
}

func (s *session) sendReject(h *[bhsLen]byte, reason byte) {
	var r [bhsLen]byte
	r[0], r[1], r[2] = opReject, 0x80, reason
	binary.BigEndian.PutUint32(r[16:], reservedTag)
	s.send(&r, append([]byte(nil), h[:]...), true)
}

// onTMF handles task management. Commands run to completion quickly, so
// aborting means dropping commands still waiting for data and waiting for the
// running ones to answer before the TMF response goes out.
func (s *session) onTMF(h *[bhsLen]byte) error {
	const (
		complete     = 0
		noLUN        = 2
		noReassign   = 4
		notSupported = 5
		rejected     = 255
		abortTask    = 1
		abortTaskSet = 2
		clearACA     = 3
		clearTaskSet = 4
		lunReset     = 5
		targetWarm   = 6
		targetCold   = 7
		taskReassign = 8
	)
	fn := h[1] & 0x7f
	resp := byte(complete)
	lunOK := s.vol != nil && decodeLUN(binary.BigEndian.Uint64(h[8:16])) == s.vol.unit.lun
	switch fn {
	case abortTask:
		ref := binary.BigEndian.Uint32(h[20:])
		if t, ok := s.pending[ref]; ok {
			t.release()
			delete(s.pending, ref)
		}
		s.inflight.Wait()
	case abortTaskSet, clearTaskSet, lunReset:
		if !lunOK {
			resp = noLUN
			break
		}
		s.dropPending()
		s.inflight.Wait()
		if fn == lunReset {
			s.vol.unit.reset()
		}
	case targetWarm, targetCold:
		s.dropPending()
		s.inflight.Wait()
		if s.vol != nil {
			s.vol.unit.reset()
		}
	case clearACA:
		resp = notSupported
	case taskReassign:
		resp = noReassign
	default:
		resp = rejected
	}
	var r [bhsLen]byte
	r[0], r[1], r[2] = opTMFResp, 0x80, resp
	copy(r[16:20], h[16:20])
	s.send(&r, nil, true)
	if fn == targetCold && resp == complete {
		return errors.New("target cold reset")
	}
	return nil
}

func (s *session) onText(h *[bhsLen]byte, data []byte) {
	var resp []kv
	for _, k := range parseText(data) {
		if k.k != "SendTargets" {
			resp = append(resp, kv{k.k, "NotUnderstood"})
			continue
		}
		var targets []string
		switch {
		case s.vol == nil && k.v == "All":
			targets = s.e.visibleTargets(s.initiator)
		case s.vol == nil:
			for _, t := range s.e.visibleTargets(s.initiator) {
				if t == k.v {
					targets = append(targets, t)
				}
			}
		default:
			targets = []string{s.targetIQN}
		}
		addr := s.nc.LocalAddr().(*net.TCPAddr)
		portal := net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port)) + ",1"
		for _, t := range targets {
			resp = append(resp, kv{"TargetName", t}, kv{"TargetAddress", portal})
		}
	}
	var r [bhsLen]byte
	r[0], r[1] = opTextResp, 0x80
	copy(r[16:20], h[16:20])
	binary.BigEndian.PutUint32(r[20:], reservedTag)
	s.send(&r, marshalText(resp), true)
}
