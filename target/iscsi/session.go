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
// collects write data. Small READs and WRITEs (see runsInline) run on that
// goroutine and queue their responses, which go out in one write when the
// reader is about to wait for the socket; every other command runs in its
// own goroutine, at most cmdWindow at a time, and writes its response (with
// whatever is queued) at once.
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

	// wmu serialises writes to the connection and guards statSN and wbuf,
	// the PDUs queued but not yet written (see flush).
	wmu    sync.Mutex
	statSN uint32
	wbuf   []byte

	expCmdSN atomic.Uint32
	sem      chan struct{}
	inflight sync.WaitGroup

	// pending, pendingBytes (their buffers) and nextTTT belong to the
	// reader goroutine.
	pending      map[uint32]*writeTask
	pendingBytes int
	nextTTT      uint32

	// textMore is the rest of a Text Response longer than the initiator
	// takes in one PDU, and textTTT the tag it asks for the rest with
	// (reader goroutine).
	textMore []byte
	textTTT  uint32

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
	dataSN   uint32 // the next Data-Out's DataSN in the current sequence
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
	for itt := range s.pending {
		s.unpark(itt).release()
	}
}

// pendingWriteMax bounds the buffers of a session's writes waiting for
// their data, allocated when the command arrives: past it, a write is
// answered TASK SET FULL (the initiator retries it) instead of letting an
// initiator that never sends the data hold 128 × 64 MiB.
const pendingWriteMax = 128 << 20

const statusTaskSetFull = 0x28

// park keeps a write until its data has arrived.
func (s *session) park(itt uint32, t *writeTask) {
	if old := s.unpark(itt); old != nil {
		old.release()
	}
	s.pending[itt] = t
	s.pendingBytes += len(t.buf)
}

// unpark takes a write out of the pending ones (nil if it is not there).
func (s *session) unpark(itt uint32) *writeTask {
	t := s.pending[itt]
	if t != nil {
		delete(s.pending, itt)
		s.pendingBytes -= len(t.buf)
	}
	return t
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

// scratchMax is the data segment of a NOP-Out or Text Request that the
// reader keeps a buffer for; longer ones (up to ourMaxRecvDataSegLen) get a
// buffer of their own that is not kept.
const scratchMax = 8192

func (s *session) readLoop() error {
	var h [bhsLen]byte
	scratch := make([]byte, scratchMax)
	for {
		if _, err := io.ReadFull(s.br, h[:]); err != nil {
			return err
		}
		ahs := int(h[4]) * 4
		dlen := dataSegLen(&h)
		if dlen > ourMaxRecvDataSegLen {
			// We declared MaxRecvDataSegmentLength: a longer PDU is a
			// protocol error. Its payload is not read.
			s.e.metrics.countRefused(refusedSegmentTooLong)
			s.sendReject(&h, rejectProtocolError)
			return &errSegmentTooLong{n: dlen, limit: ourMaxRecvDataSegLen}
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
		data := scratch[:min(dlen, scratchMax)]
		if dlen > scratchMax {
			data = make([]byte, dlen)
		}
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
			s.flush()
			s.inflight.Wait()
			s.dropPending()
			// The nexus ends with the logout, before its answer: an
			// initiator told it is logged out may find its reservation
			// still held otherwise (libiscsi's Reserve6.Logout reserves
			// from a second initiator right after the answer).
			if s.nexus != nil {
				s.vol.unit.removeNexus(s.nexus)
			}
			var r [bhsLen]byte
			r[0], r[1] = opLogoutResp, 0x80
			copy(r[16:20], h[16:20])
			s.send(&r, nil, true)
			return nil
		default:
			reason := byte(rejectNotSupported)
			if op == opSNACKReq {
				reason = rejectProtocolError // no SNACK at error recovery level 0
			}
			s.sendReject(&h, reason)
		}
	}
}

// Reject reasons (RFC 7143 11.17.1).
const (
	rejectProtocolError = 0x04
	rejectNotSupported  = 0x05
)

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
			s.sendReject(h, rejectNotSupported)
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
	imm := min(uint32(dlen), edtl)
	if imm < edtl && s.pendingBytes+int(edtl) > pendingWriteMax {
		if err := s.discard(dlen); err != nil {
			return err
		}
		hdr := *h
		s.respond(&hdr, scsiResult{status: statusTaskSetFull}, -1, false)
		return nil
	}
	buf, release := getBuffer(int(edtl))
	if _, err := io.ReadFull(s.br, buf[:imm]); err != nil {
		release()
		return err
	}
	// Padding, and immediate data beyond the expected length: dropped.
	if _, err := s.br.Discard((dlen+3)&^3 - int(imm)); err != nil {
		release()
		return err
	}
	if imm == edtl {
		s.dispatch(h, buf, release)
		return nil
	}
	t := &writeTask{hdr: *h, buf: buf, release: release, received: imm, ttt: reservedTag}
	s.park(binary.BigEndian.Uint32(h[16:]), t)
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
			s.sendReject(h, rejectProtocolError) // data beyond the expected length
		}
		return nil
	}
	if sn := binary.BigEndian.Uint32(h[36:]); sn != t.dataSN {
		// A lost or reordered Data-Out: at ErrorRecoveryLevel 0 there is
		// no recovery R2T (RFC 7143), so the command ends with a
		// check condition and what else arrives for it is dropped.
		if err := s.discard(dlen); err != nil {
			return err
		}
		s.unpark(itt).release()
		s.dispatchError(&t.hdr, senseData(senseAbortedCommand, ascDataPhaseError))
		return nil
	}
	t.dataSN++
	if err := s.readData(t.buf[off : off+uint32(dlen)]); err != nil {
		return err
	}
	t.received += uint32(dlen)
	if h[1]&flagFinal == 0 {
		return nil
	}
	if t.received >= uint32(len(t.buf)) {
		s.unpark(itt)
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
	t.dataSN = 0 // each R2T starts a new sequence
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

// inlineMax is the largest READ or WRITE that runs on the reader goroutine.
// In the page cache such a command takes a few microseconds, less than
// starting a goroutine and waking it; larger transfers, FUA writes (they wait
// for fdatasync) and all other commands get their own goroutine so that they
// do not hold up the reader.
const inlineMax = 64 << 10

// runsInline reports whether a command runs on the reader goroutine: a
// READ or WRITE (6/10/12/16) without FUA of at most inlineMax bytes, by both
// the CDB and the expected transfer length.
func runsInline(h *[bhsLen]byte) bool {
	cdb := h[32:48]
	switch cdb[0] {
	case 0x08, 0x0a, 0x28, 0x2a, 0xa8, 0xaa, 0x88, 0x8a:
	default:
		return false
	}
	_, n, flags, err := rwFields(cdb)
	return err == nil && flags&0x08 == 0 && uint64(n)<<blockShift <= inlineMax &&
		binary.BigEndian.Uint32(h[20:]) <= inlineMax
}

// dispatch runs a complete command: inline (see runsInline) if it can, or in
// its own goroutine once a slot is free.
func (s *session) dispatch(h *[bhsLen]byte, out []byte, release func()) {
	if runsInline(h) && s.runInline(h, out) {
		release()
		return
	}
	hdr := *h
	select {
	case s.sem <- struct{}{}:
	default:
		s.flush() // queued responses must not wait for a slot
		select {
		case s.sem <- struct{}{}:
		case <-s.closed:
			release()
			return
		}
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
		s.execute(&hdr, out, false)
	}()
}

// runInline runs a command on the reader goroutine and queues its response.
// It reports false, having done nothing, for a read that would wait for the
// disk (not all in the page cache) and for a write while writes are held
// (Engine.Hold): that one gets a goroutine, so that reads from disk still
// overlap and a held write does not stop the reader (reads go on during a
// hold). A panic closes the session, as in a goroutine.
func (s *session) runInline(h *[bhsLen]byte, out []byte) (done bool) {
	defer func() {
		if r := recover(); r != nil {
			s.e.log.Error("iscsi command panicked", "remote", s.remote, "panic", r)
			s.close()
			done = true
		}
	}()
	return s.execute(h, out, true)
}

func (s *session) dispatchError(h *[bhsLen]byte, sense []byte) {
	hdr := *h
	s.respond(&hdr, scsiResult{status: statusCheckCondition, sense: sense}, 0, false)
}

// execute runs a command and sends its response. Inline (on the reader
// goroutine) the response is only queued, and a read that would wait for the
// disk is not done at all: then execute reports false.
func (s *session) execute(h *[bhsLen]byte, out []byte, inline bool) (done bool) {
	edtl := binary.BigEndian.Uint32(h[20:])
	var cdb [16]byte
	copy(cdb[:], h[32:48])
	req := &scsiRequest{
		cdb:    cdb[:],
		lun:    decodeLUN(binary.BigEndian.Uint64(h[8:16])),
		edtl:   edtl,
		read:   h[1]&0x40 != 0,
		write:  h[1]&0x20 != 0,
		out:    out,
		nexus:  s.nexus,
		noWait: inline,
		cancel: s.closed,
	}
	if req.read && req.write {
		s.respond(h, scsiResult{status: statusCheckCondition, sense: senseData(senseIllegalRequest, ascInvalidFieldInCDB)}, 0, !inline)
		return true
	}
	res := s.vol.unit.execute(req)
	if res.wouldBlock {
		return false
	}
	if res.release != nil {
		defer res.release()
	}
	s.respond(h, res, wantedOut(cdb[:]), !inline)
	return true
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
func (s *session) respond(h *[bhsLen]byte, res scsiResult, wantOut int, now bool) {
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
		s.put(&r, data, true, now)
		return
	}
	s.sendDataIn(h, in, res.status, flags, resid, now)
}

const (
	// copyMax is the largest Data-In copied into the queue; larger data goes
	// out at once with writev straight from its buffer, queue first.
	copyMax = 16 << 10
	// queueMax bounds the queue: past it, the queue is written out at once.
	queueMax = 256 << 10
)

var zeroBHS [bhsLen]byte

// sendDataIn sends the Data-In sequence of a command, its status in the last
// PDU (the S bit). With now false and small data it is only queued.
func (s *session) sendDataIn(h *[bhsLen]byte, in []byte, status, flags byte, resid uint32, now bool) {
	seg := int(s.params.maxSend)
	n := (len(in) + seg - 1) / seg
	s.wmu.Lock()
	defer s.wmu.Unlock()
	exp, maxSN := s.expCmdSN.Load(), s.maxCmdSN()
	header := func(r []byte, i int, chunk []byte) {
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
	}
	if len(in) <= copyMax {
		for i := 0; i < n; i++ {
			chunk := in[i*seg : min((i+1)*seg, len(in))]
			off := len(s.wbuf)
			s.wbuf = append(s.wbuf, zeroBHS[:]...)
			header(s.wbuf[off:off+bhsLen], i, chunk)
			s.wbuf = append(s.wbuf, chunk...)
			s.wbuf = append(s.wbuf, zeroPad[:(4-len(chunk)%4)%4]...)
		}
		if now || len(s.wbuf) >= queueMax {
			s.flushLocked()
		}
		return
	}
	hdrs := make([]byte, n*bhsLen)
	bufs := make(net.Buffers, 0, 3*n+1)
	if len(s.wbuf) > 0 {
		bufs = append(bufs, s.wbuf)
	}
	for i := 0; i < n; i++ {
		r := hdrs[i*bhsLen : (i+1)*bhsLen]
		chunk := in[i*seg : min((i+1)*seg, len(in))]
		header(r, i, chunk)
		bufs = append(bufs, r, chunk)
		if pad := (4 - len(chunk)%4) % 4; pad > 0 {
			bufs = append(bufs, zeroPad[:pad])
		}
	}
	_, err := bufs.WriteTo(s.nc)
	s.resetQueue()
	if err != nil {
		s.close()
	}
}

// send writes one target PDU (with whatever is queued before it).
func (s *session) send(r *[bhsLen]byte, data []byte, status bool) {
	s.put(r, data, status, true)
}

// put queues one target PDU, filling in StatSN (advancing it when the PDU
// carries status), ExpCmdSN and MaxCmdSN; with now it writes the queue out.
func (s *session) put(r *[bhsLen]byte, data []byte, status, now bool) {
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
	s.wbuf = append(s.wbuf, r[:]...)
	s.wbuf = append(s.wbuf, data...)
	s.wbuf = append(s.wbuf, zeroPad[:(4-len(data)%4)%4]...)
	if now || len(s.wbuf) >= queueMax {
		s.flushLocked()
	}
}

// flush writes out the queued PDUs. The reader goroutine calls it before it
// waits for the socket (see connReader) or for a command slot. If wmu is
// held, the holder is a sender that writes the whole queue before it
// unlocks (only the reader goroutine queues without writing, and it is here),
// so there is nothing to do.
func (s *session) flush() {
	if s.wmu.TryLock() {
		s.flushLocked()
		s.wmu.Unlock()
	}
}

func (s *session) flushLocked() {
	if len(s.wbuf) == 0 {
		return
	}
	_, err := s.nc.Write(s.wbuf)
	s.resetQueue()
	if err != nil {
		s.close()
	}
}

// resetQueue empties the queue; a queue grown by a large PDU (a NOP-In echo
// of up to 16 MiB) is not kept.
func (s *session) resetQueue() {
	if cap(s.wbuf) > 2*queueMax {
		s.wbuf = nil
		return
	}
	s.wbuf = s.wbuf[:0]
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

// ascDataPhaseError is the sense of a command whose Data-Out sequence broke
// (SPC-4: DATA PHASE ERROR).
const ascDataPhaseError = 0x4b00

// onTMF handles task management. Commands run to completion quickly, so
// aborting means dropping commands still waiting for data and waiting for the
// running ones to answer before the TMF response goes out. ABORT TASK of a
// command that has been answered (or is being) reports that the task does
// not exist, as the initiator then has its response.
func (s *session) onTMF(h *[bhsLen]byte) error {
	const (
		complete     = 0
		noTask       = 1
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
	s.flush() // answer queued commands before waiting for running ones
	fn := h[1] & 0x7f
	resp := byte(complete)
	lunOK := s.vol != nil && decodeLUN(binary.BigEndian.Uint64(h[8:16])) == s.vol.unit.lun
	switch fn {
	case abortTask:
		ref := binary.BigEndian.Uint32(h[20:])
		if t := s.unpark(ref); t != nil {
			t.release()
		} else {
			resp = noTask
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
	if ttt := binary.BigEndian.Uint32(h[20:]); ttt != reservedTag && ttt == s.textTTT && s.textMore != nil {
		s.sendText(h, s.textMore) // the initiator asks for the rest
		return
	}
	s.textMore = nil
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
	s.sendText(h, marshalText(resp))
}

// sendText sends a Text Response, or its first piece when it is longer
// than the initiator's MaxRecvDataSegmentLength: then the C bit is set and
// a target transfer tag names the rest, which the initiator asks for with
// an empty Text Request carrying that tag (RFC 7143).
func (s *session) sendText(h *[bhsLen]byte, text []byte) {
	var r [bhsLen]byte
	r[0] = opTextResp
	copy(r[16:20], h[16:20])
	if limit := int(s.params.maxSend); len(text) > limit {
		s.nextTTT++
		if s.nextTTT == reservedTag {
			s.nextTTT = 1
		}
		s.textTTT, s.textMore = s.nextTTT, text[limit:]
		r[1] = 0x40 // C: more follows
		binary.BigEndian.PutUint32(r[20:], s.textTTT)
		s.send(&r, text[:limit], true)
		return
	}
	s.textMore = nil
	r[1] = 0x80
	binary.BigEndian.PutUint32(r[20:], reservedTag)
	s.send(&r, text, true)
}
