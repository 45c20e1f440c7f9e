package iscsi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/gostor/gotgt/pkg/api"
	"github.com/gostor/gotgt/pkg/scsi"
	uuid "github.com/satori/go.uuid"
)

const (
	blockShift = 9
	blockSize  = 1 << blockShift

	// maxTransferBlocks bounds one READ or WRITE (16 MiB), as announced in the
	// Block Limits VPD page; it keeps per-command buffers bounded.
	maxTransferBlocks = 32768
	// maxWriteSameBlocks bounds one WRITE SAME (16 MiB).
	maxWriteSameBlocks = 32768
	maxUnmapDescs      = 256
	// maxCompareAndWriteBlocks is the Block Limits VPD's MAXIMUM COMPARE
	// AND WRITE LENGTH (the field's largest value): 2 × 255 blocks of data-out.
	maxCompareAndWriteBlocks = 255
)

// SCSI status codes and sense keys used by our own handlers.
const (
	statusGood                = 0x00
	statusCheckCondition      = 0x02
	statusReservationConflict = 0x18

	senseIllegalRequest = 0x05
	senseMediumError    = 0x03
	senseHardwareError  = 0x04
	senseUnitAttention  = 0x06
	senseDataProtect    = 0x07
	senseAbortedCommand = 0x0b
	senseMiscompare     = 0x0e
)

// Additional sense codes (ASC<<8 | ASCQ).
const (
	ascInvalidOpcode      = 0x2000
	ascLBAOutOfRange      = 0x2100
	ascInvalidFieldInCDB  = 0x2400
	ascLUNNotSupported    = 0x2500
	ascInvalidFieldInParm = 0x2600
	ascParamListLength    = 0x1a00
	ascWriteError         = 0x0c00
	ascReadError          = 0x1100
	ascInternalFailure    = 0x4400
	ascCapacityChanged    = 0x2a09
	ascMiscompare         = 0x1d00 // MISCOMPARE DURING VERIFY OPERATION
)

// senseData builds fixed-format sense data (SPC-4 4.5.3).
func senseData(key byte, asc uint16) []byte {
	s := make([]byte, 18)
	s[0] = 0x70
	s[2] = key
	s[7] = 10
	s[12] = byte(asc >> 8)
	s[13] = byte(asc)
	return s
}

// scsiRequest is one SCSI command as the session layer hands it over.
type scsiRequest struct {
	cdb   []byte
	lun   uint64
	edtl  uint32 // expected data transfer length from the iSCSI header
	read  bool
	write bool
	out   []byte // data-out, as received
	nexus *nexus
	// noWait asks for a read only if its data is in the page cache, and for
	// a command that changes data only if writes are not held (see
	// Engine.Hold); if not, the result has wouldBlock set and nothing was
	// done.
	noWait bool
	// cancel is closed when the session ends: a command waiting for held
	// writes to be released gives up then.
	cancel <-chan struct{}
}

// scsiResult is what goes back: status, sense, data-in (before clamping to
// the expected length) and a release function for pooled buffers.
type scsiResult struct {
	status     byte
	sense      []byte
	in         []byte
	release    func()
	wouldBlock bool // see scsiRequest.noWait
}

// nexus is one I_T nexus: an initiator port logged in to a volume's target.
type nexus struct {
	itn  *api.ITNexus
	port string // initiator port name: initiator IQN and ISID
}

// opTable is the SBC operation table shared by all our logical units: gotgt's
// table with ORWRITE(16) disabled and our own handlers for the data path and
// for commands gotgt gets wrong. It is built once because gotgt configures it
// through package variables.
var (
	opTableOnce sync.Once
	opTable     scsi.SBCSCSIDeviceProtocol

	// prMu serialises persistent-reservation commands: gotgt keeps
	// reservations in package-level maps without locking.
	prMu sync.Mutex
)

func sharedOpTable() scsi.SBCSCSIDeviceProtocol {
	opTableOnce.Do(func() {
		// ORWRITE(16) dereferences a nil data-in buffer inside gotgt; with the
		// switch off, the table answers it with ILLEGAL REQUEST.
		scsi.EnableORWrite16 = false
		t := scsi.NewSBCDevice(api.TYPE_DISK).(scsi.SBCSCSIDeviceProtocol)
		set := func(op api.SCSICommandType, fn api.CommandFunc) {
			t.SCSIDeviceOps[op] = scsi.NewSCSIDeviceOperation(fn, nil, 0)
		}
		set(api.ORWRITE_16, scsi.SPCIllegalOp)
		for _, op := range []api.SCSICommandType{api.READ_6, api.READ_10, api.READ_12, api.READ_16,
			api.WRITE_6, api.WRITE_10, api.WRITE_12, api.WRITE_16,
			api.WRITE_VERIFY, api.WRITE_VERIFY_12, api.WRITE_VERIFY_16} {
			set(op, handleReadWrite)
		}
		set(api.WRITE_SAME, handleWriteSame)
		set(api.WRITE_SAME_16, handleWriteSame)
		set(api.UNMAP, handleUnmap)
		set(api.INQUIRY, handleInquiry)
		set(api.SYNCHRONIZE_CACHE, handleSyncCache)
		set(api.SYNCHRONIZE_CACHE_16, handleSyncCache)
		set(api.SERVICE_ACTION_IN, handleServiceActionIn)
		for _, op := range []api.SCSICommandType{api.PERSISTENT_RESERVE_IN, api.PERSISTENT_RESERVE_OUT} {
			inner := t.SCSIDeviceOps[op]
			fn := inner.CommandPerformFunc
			inner.CommandPerformFunc = func(host int, cmd *api.SCSICommand) api.SAMStat {
				prMu.Lock()
				defer prMu.Unlock()
				return fn(host, cmd)
			}
			t.SCSIDeviceOps[op] = inner
		}
		opTable = t
	})
	return opTable
}

// logicalUnit is a volume as the SCSI layer sees it.
type logicalUnit struct {
	// mu is held for reading while a command runs and for writing while the
	// size changes, because gotgt's handlers read the size without locking,
	// and while a COMPARE AND WRITE runs, which makes it atomic against
	// every other command of every session (writes run concurrently under
	// the read lock, so no narrower lock would cover them all).
	mu     sync.RWMutex
	lu     *api.SCSILu
	target *api.SCSITarget
	store  *fileStore
	lun    uint64
	log    *slog.Logger

	// resMu guards holder, the I_T nexus holding an SPC-2 RESERVE, if any.
	resMu  sync.Mutex
	holder *nexus

	pr *persistentReservations

	// gate holds back the commands that change data while Engine.Hold
	// has the volume quiet.
	gate writeGate
}

func deviceID(name string) uint64 {
	h := fnv.New64a()
	io.WriteString(h, name)
	return h.Sum64() & 0x0fffffffffffffff
}

// newLogicalUnit builds the unit of a volume; rs, if not nil, keeps its
// persistent reservations, which are read back here.
func newLogicalUnit(iqn, name string, lun uint64, store *fileStore, size uint64, rs ReservationStore, log *slog.Logger) (*logicalUnit, error) {
	pr, err := newPersistentReservations(name, rs)
	if err != nil {
		return nil, err
	}
	proto := sharedOpTable()
	lu := &api.SCSILu{
		Size:           size,
		UUID:           deviceID(name),
		Path:           store.path,
		BlockShift:     blockShift,
		Storage:        store,
		DeviceProtocol: proto,
	}
	proto.InitLu(lu)
	lu.Attrs.VendorID = "DROVER"
	lu.Attrs.ProductID = "VOLUME"
	lu.Attrs.ProductRev = "0001"
	lu.Attrs.ThinProvisioning = true
	lu.Attrs.Online = true
	// One logical block per physical block, as tgtd reports: the unmap
	// granularity (4 KiB, the filesystem's block) is in the Block Limits
	// VPD page instead, and libiscsi's GetLBAStatus.UnmapSingle assumes
	// LBPPBE 0 (it expects the status of LBA n+1 to start at n+LBPPB).
	lu.Attrs.Lbppbe = 0
	tgt := &api.SCSITarget{
		Name:    iqn,
		Devices: api.LUNMap{lun: lu},
		LUN0:    lu,
		TargetPortGroups: []*api.TargetPortGroup{{
			GroupID:         1,
			TargetPortGroup: []*api.SCSITargetPort{{RelativeTargetPortID: 1, TargetPortName: iqn + ",t,0x0001"}},
		}},
		ITNexus: map[uuid.UUID]*api.ITNexus{},
	}
	prMu.Lock()
	if op, ok := scsi.GetSCSIReservationOperator().(*scsi.SCSISimpleReservationOperator); ok {
		op.InitLUReservation(iqn, lu.UUID)
	}
	prMu.Unlock()
	return &logicalUnit{lu: lu, target: tgt, store: store, lun: lun, log: log, pr: pr}, nil
}

// close drops the unit's reservations from gotgt's package-level state.
func (u *logicalUnit) close() {
	prMu.Lock()
	defer prMu.Unlock()
	if op, ok := scsi.GetSCSIReservationOperator().(*scsi.SCSISimpleReservationOperator); ok {
		op.RemoveAllReservation(u.target.Name, u.lu.UUID)
	}
}

func (u *logicalUnit) resize(size uint64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.lu.Size = size
	mbd := uint32(0xffffffff)
	if blocks := size >> blockShift; blocks>>32 == 0 {
		mbd = uint32(blocks)
	}
	binary.BigEndian.PutUint32(u.lu.ModeBlockDescriptor, mbd)
}

func (u *logicalUnit) addNexus(n *nexus) { scsi.AddITNexus(u.target, n.itn) }
func (u *logicalUnit) removeNexus(n *nexus) {
	scsi.RemoveITNexus(u.target, n.itn)
	u.resMu.Lock()
	if u.holder == n {
		u.holder = nil
	}
	u.resMu.Unlock()
}

// reset drops the SPC-2 reservation, as a LUN or target reset does.
func (u *logicalUnit) reset() {
	u.resMu.Lock()
	u.holder = nil
	u.resMu.Unlock()
}

// reserve implements RESERVE and RELEASE (6 and 10) and reports whether op
// conflicts with another nexus's reservation.
func (u *logicalUnit) reserve(n *nexus, op byte) (status byte, handled bool) {
	u.resMu.Lock()
	defer u.resMu.Unlock()
	switch op {
	case opReserve6, opReserve10:
		if u.holder != nil && u.holder != n {
			return statusReservationConflict, true
		}
		u.holder = n
		return statusGood, true
	case opRelease6, opRelease10:
		if u.holder == n {
			u.holder = nil
		}
		return statusGood, true
	case opInquiry, opRequestSense, opReportLUNs, opPRIn, opPROut:
		return statusGood, false
	}
	if u.holder != nil && u.holder != n {
		return statusReservationConflict, true
	}
	return statusGood, false
}

// execute runs one command. A panic in a handler (ours or gotgt's) becomes
// CHECK CONDITION / INTERNAL TARGET FAILURE instead of taking the process down.
func (u *logicalUnit) execute(req *scsiRequest) (res scsiResult) {
	defer func() {
		if r := recover(); r != nil {
			u.log.Error("scsi command panicked", "opcode", fmt.Sprintf("%#02x", req.cdb[0]), "panic", r, "stack", string(debug.Stack()))
			if res.release != nil {
				res.release()
			}
			res = scsiResult{status: statusCheckCondition, sense: senseData(senseHardwareError, ascInternalFailure)}
		}
	}()
	op := req.cdb[0]
	// The gate comes before mu: a command waiting for held writes must not
	// hold mu for reading, or a resize waiting for mu would stop the reads.
	if changesData(op) {
		if req.noWait {
			if !u.gate.tryEnter() {
				return scsiResult{wouldBlock: true}
			}
		} else if err := u.gate.enter(req.cancel); err != nil {
			// The session is going away: the answer is not likely to
			// reach anyone, and an initiator that sees it may retry.
			return scsiResult{status: statusCheckCondition, sense: senseData(senseAbortedCommand, 0)}
		}
		defer u.gate.leave()
	}
	if op == opCompareAndWrite {
		u.mu.Lock()
		defer u.mu.Unlock()
	} else {
		u.mu.RLock()
		defer u.mu.RUnlock()
	}

	if req.lun != u.lun {
		switch api.SCSICommandType(op) {
		case api.INQUIRY:
			return inquiryNoLUN(req)
		case api.REPORT_LUNS, api.REQUEST_SENSE:
		default:
			return scsiResult{status: statusCheckCondition, sense: senseData(senseIllegalRequest, ascLUNNotSupported)}
		}
	}
	if u.pr.conflicts(req.nexus.port, op) {
		return scsiResult{status: statusReservationConflict}
	}
	switch op {
	case opPRIn:
		return u.pr.in(req.cdb)
	case opPROut:
		return u.pr.out(req.nexus.port, req.cdb, req.out)
	case opReserve6, opReserve10:
		if u.pr.held() {
			return scsiResult{status: statusReservationConflict}
		}
	case opMaintenanceIn:
		if len(req.cdb) > 1 && req.cdb[1]&0x1f == saReportSupportedOps {
			return reportSupportedOpcodes(req.cdb)
		}
	}
	if st, handled := u.reserve(req.nexus, op); handled {
		return scsiResult{status: st}
	}
	if isReadWrite(op) {
		// The data path skips gotgt's command structure: its table would
		// only call handleReadWrite, after we allocated an unused data-in
		// buffer of the full transfer length.
		c := &cmdContext{unit: u, req: req}
		c.readWrite(req.cdb)
		return *c.result
	}
	if op == opCompareAndWrite {
		c := &cmdContext{unit: u, req: req}
		c.compareAndWrite(req.cdb)
		return *c.result
	}

	cmd := &api.SCSICommand{
		OpCode:          op,
		Target:          u.target,
		Device:          u.lu,
		ITNexus:         req.nexus.itn,
		ITNexusID:       req.nexus.itn.ID,
		SCB:             req.cdb,
		SCBLength:       len(req.cdb),
		RelTargetPortID: 1,
	}
	binary.LittleEndian.PutUint64(cmd.Lun[:], req.lun)
	ctx := &cmdContext{unit: u, req: req}
	cmdContexts.Store(cmd, ctx)
	defer cmdContexts.Delete(cmd)
	if req.write {
		cmd.Direction = api.SCSIDataWrite
		cmd.OutSDBBuffer = &api.SCSIDataBuffer{Buffer: req.out, Length: uint32(len(req.out))}
	}
	if req.read || !req.write {
		if req.read {
			cmd.Direction = api.SCSIDataRead
		}
		n := int(req.edtl)
		if n < 4096 {
			n = 4096 // gotgt's handlers index the buffer without checking
		}
		cmd.InSDBBuffer = &api.SCSIDataBuffer{Buffer: make([]byte, n), Length: req.edtl}
	}

	fn := sharedOpTable().SCSIDeviceOps[op].CommandPerformFunc
	st := fn(0, cmd)
	if ctx.result != nil {
		return *ctx.result
	}
	res.status = st.Stat
	if st.Stat == statusCheckCondition && cmd.SenseBuffer != nil {
		res.sense = cmd.SenseBuffer.Buffer
		if len(res.sense) < 14 {
			// gotgt truncates sense to the CDB's allocation length.
			res.sense = senseData(cmd.SenseBuffer.Buffer[min(2, len(cmd.SenseBuffer.Buffer)-1)]&0x0f, ascInvalidFieldInCDB)
		}
		return res
	}
	if st.Stat != statusGood || cmd.InSDBBuffer == nil {
		return res
	}
	n := int(req.edtl)
	if alloc, ok := scsi.SCSICDBBufXLength(req.cdb); ok && alloc < int64(n) {
		n = int(alloc)
	}
	if r := int(cmd.InSDBBuffer.Resid); r != 0 && r < n {
		n = r
	}
	res.in = cmd.InSDBBuffer.Buffer[:n]
	return res
}

// cmdContext carries our own state to our handlers, which gotgt's table calls
// with nothing but the gotgt command.
type cmdContext struct {
	unit   *logicalUnit
	req    *scsiRequest
	result *scsiResult
}

var cmdContexts sync.Map // *api.SCSICommand → *cmdContext

func contextOf(cmd *api.SCSICommand) *cmdContext {
	v, ok := cmdContexts.Load(cmd)
	if !ok {
		panic(errors.New("command without context"))
	}
	return v.(*cmdContext)
}

func (c *cmdContext) fail(key byte, asc uint16) api.SAMStat {
	c.result = &scsiResult{status: statusCheckCondition, sense: senseData(key, asc)}
	return api.SAMStatCheckCondition
}

func (c *cmdContext) good(in []byte, release func()) api.SAMStat {
	c.result = &scsiResult{status: statusGood, in: in, release: release}
	return api.SAMStatGood
}

func (c *cmdContext) blocks() uint64 { return c.unit.lu.Size >> blockShift }

// rwFields decodes LBA, transfer length and the flags byte of READ/WRITE(6/10/12/16),
// WRITE AND VERIFY, WRITE SAME and SYNCHRONIZE CACHE.
func rwFields(cdb []byte) (lba uint64, n uint32, flags byte, err error) {
	var need int
	switch cdb[0] {
	case opRead6, opWrite6:
		need = 6
	case opRead10, opWrite10, opWriteVerify10, opWriteSame10, opSyncCache10:
		need = 10
	case opRead12, opWrite12, opWriteVerify12:
		need = 12
	case opRead16, opWrite16, opWriteVerify16, opWriteSame16, opSyncCache16:
		need = 16
	}
	if len(cdb) < need {
		return 0, 0, 0, errors.New("short cdb")
	}
	switch cdb[0] {
	case opRead6, opWrite6:
		lba = uint64(cdb[1]&0x1f)<<16 | uint64(cdb[2])<<8 | uint64(cdb[3])
		n = uint32(cdb[4])
		if n == 0 {
			n = 256
		}
		return lba, n, 0, nil
	case opRead10, opWrite10, opWriteVerify10, opWriteSame10, opSyncCache10:
		return uint64(binary.BigEndian.Uint32(cdb[2:])), uint32(binary.BigEndian.Uint16(cdb[7:])), cdb[1], nil
	case opRead12, opWrite12, opWriteVerify12:
		return uint64(binary.BigEndian.Uint32(cdb[2:])), binary.BigEndian.Uint32(cdb[6:]), cdb[1], nil
	default:
		return binary.BigEndian.Uint64(cdb[2:]), binary.BigEndian.Uint32(cdb[10:]), cdb[1], nil
	}
}

func outOfRange(lba uint64, n uint64, blocks uint64) bool {
	return lba > blocks || n > blocks-lba
}

// isReadWrite reports whether op is one of the commands of handleReadWrite.
func isReadWrite(op byte) bool {
	switch op {
	case opRead6, opRead10, opRead12, opRead16,
		opWrite6, opWrite10, opWrite12, opWrite16,
		opWriteVerify10, opWriteVerify12, opWriteVerify16:
		return true
	}
	return false
}

func handleReadWrite(_ int, cmd *api.SCSICommand) api.SAMStat {
	return contextOf(cmd).readWrite(cmd.SCB)
}

// readWrite serves READ and WRITE (6/10/12/16) and WRITE AND VERIFY (10/12/16)
// with pread into a pooled buffer and pwrite from the request's data.
func (c *cmdContext) readWrite(cdb []byte) api.SAMStat {
	lba, n, flags, err := rwFields(cdb)
	if err != nil || flags&0xe0 != 0 {
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if outOfRange(lba, uint64(n), c.blocks()) {
		return c.fail(senseIllegalRequest, ascLBAOutOfRange)
	}
	if n > maxTransferBlocks {
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	off := int64(lba) << blockShift
	length := int(n) << blockShift
	st := c.unit.store
	isRead := cdb[0] == opRead6 || cdb[0] == opRead10 || cdb[0] == opRead12 || cdb[0] == opRead16
	start := time.Now()
	if isRead {
		buf, release := getBuffer(length)
		read := st.readAt
		if c.req.noWait {
			read = st.readAtNoWait
		}
		if err := read(buf, off); err != nil {
			release()
			if errors.Is(err, errWouldBlock) {
				c.result = &scsiResult{wouldBlock: true}
				return api.SAMStatGood
			}
			c.unit.log.Error("read failed", "path", st.path, "err", err)
			return c.fail(senseMediumError, ascReadError)
		}
		st.metrics.observeRead(length, time.Since(start))
		return c.good(buf, release)
	}
	data := c.req.out
	if len(data) > length {
		data = data[:length]
	}
	if err := st.writeAt(data, off); err != nil {
		c.unit.log.Error("write failed", "path", st.path, "err", err)
		return c.fail(senseMediumError, ascWriteError)
	}
	if flags&0x08 != 0 { // FUA
		if err := st.sync(); err != nil {
			return c.fail(senseMediumError, ascWriteError)
		}
	}
	st.metrics.observeWrite(len(data), time.Since(start))
	return c.good(nil, nil)
}

// compareAndWrite serves COMPARE AND WRITE (SBC-3 5.2): the first half of
// the data-out is compared with the blocks and, if they match, the second
// half is written over them. The caller holds the unit's mu exclusively,
// so no other command of any session runs in between.
func (c *cmdContext) compareAndWrite(cdb []byte) api.SAMStat {
	if len(cdb) < 16 || cdb[1]&0xe0 != 0 { // WRPROTECT: no protection information here
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	lba := binary.BigEndian.Uint64(cdb[2:])
	n := uint64(cdb[13])
	if outOfRange(lba, n, c.blocks()) {
		return c.fail(senseIllegalRequest, ascLBAOutOfRange)
	}
	if n > maxCompareAndWriteBlocks {
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	length := int(n) << blockShift
	if int(c.req.edtl) != 2*length || len(c.req.out) != 2*length {
		// The data-out must be the blocks to compare and the blocks to write.
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if n == 0 {
		return c.good(nil, nil) // nothing to compare or write: not an error
	}
	st := c.unit.store
	off := int64(lba) << blockShift
	start := time.Now()
	cur, release := getBuffer(length)
	defer release()
	if err := st.readAt(cur, off); err != nil {
		c.unit.log.Error("read failed", "path", st.path, "err", err)
		return c.fail(senseMediumError, ascReadError)
	}
	if i := firstDifference(cur, c.req.out[:length]); i >= 0 {
		s := senseData(senseMiscompare, ascMiscompare)
		s[0] |= 0x80 // VALID: INFORMATION is the offset of the first miscompare
		binary.BigEndian.PutUint32(s[3:], uint32(i))
		c.result = &scsiResult{status: statusCheckCondition, sense: s}
		return api.SAMStatCheckCondition
	}
	if err := st.writeAt(c.req.out[length:], off); err != nil {
		c.unit.log.Error("write failed", "path", st.path, "err", err)
		return c.fail(senseMediumError, ascWriteError)
	}
	if cdb[1]&0x08 != 0 { // FUA
		if err := st.sync(); err != nil {
			return c.fail(senseMediumError, ascWriteError)
		}
	}
	st.metrics.observeWrite(length, time.Since(start))
	return c.good(nil, nil)
}

// firstDifference is the offset of the first byte where a and b differ, or
// -1 if they are equal (they have the same length).
func firstDifference(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func handleSyncCache(_ int, cmd *api.SCSICommand) api.SAMStat {
	c := contextOf(cmd)
	lba, n, _, err := rwFields(cmd.SCB)
	if err != nil {
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	if outOfRange(lba, uint64(n), c.blocks()) {
		return c.fail(senseIllegalRequest, ascLBAOutOfRange)
	}
	start := time.Now()
	if err := c.unit.store.sync(); err != nil {
		return c.fail(senseMediumError, ascWriteError)
	}
	c.unit.store.metrics.observeFlush(time.Since(start))
	return c.good(nil, nil)
}

func handleWriteSame(_ int, cmd *api.SCSICommand) api.SAMStat {
	c := contextOf(cmd)
	lba, n, flags, err := rwFields(cmd.SCB)
	if err != nil || flags&0xe0 != 0 || flags&0x10 != 0 || flags&0x06 != 0 {
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	ndob := cmd.SCB[0] == opWriteSame16 && flags&0x01 != 0
	unmap := flags&0x08 != 0
	if outOfRange(lba, uint64(n), c.blocks()) {
		return c.fail(senseIllegalRequest, ascLBAOutOfRange)
	}
	if n == 0 || n > maxWriteSameBlocks {
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	block := make([]byte, blockSize)
	if !ndob {
		if len(c.req.out) != blockSize {
			return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
		}
		copy(block, c.req.out)
	}
	st := c.unit.store
	off := int64(lba) << blockShift
	length := int64(n) << blockShift
	if unmap && isZero(block) {
		if err := st.punch(off, length); err != nil {
			return c.fail(senseMediumError, ascWriteError)
		}
		return c.good(nil, nil)
	}
	chunk := make([]byte, min(length, 1<<20))
	for i := 0; i < len(chunk); i += blockSize {
		copy(chunk[i:], block)
	}
	start := time.Now()
	for done := int64(0); done < length; {
		m := min(int64(len(chunk)), length-done)
		if err := st.writeAt(chunk[:m], off+done); err != nil {
			return c.fail(senseMediumError, ascWriteError)
		}
		done += m
	}
	st.metrics.observeWrite(int(length), time.Since(start))
	return c.good(nil, nil)
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func handleUnmap(_ int, cmd *api.SCSICommand) api.SAMStat {
	c := contextOf(cmd)
	cdb := cmd.SCB
	if len(cdb) < 10 || cdb[1]&0x01 != 0 {
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	plen := int(binary.BigEndian.Uint16(cdb[7:]))
	if plen == 0 {
		return c.good(nil, nil)
	}
	data := c.req.out
	if plen < 8 || len(data) < 8 {
		return c.fail(senseIllegalRequest, ascParamListLength)
	}
	data = data[:min(plen, len(data))]
	bdl := int(binary.BigEndian.Uint16(data[2:]))
	if bdl > len(data)-8 {
		bdl = (len(data) - 8)
	}
	bdl -= bdl % 16
	if bdl/16 > maxUnmapDescs {
		return c.fail(senseIllegalRequest, ascInvalidFieldInParm)
	}
	type extent struct{ lba, n uint64 }
	var ext []extent
	for off := 8; off+16 <= 8+bdl; off += 16 {
		lba := binary.BigEndian.Uint64(data[off:])
		n := uint64(binary.BigEndian.Uint32(data[off+8:]))
		if outOfRange(lba, n, c.blocks()) {
			return c.fail(senseIllegalRequest, ascLBAOutOfRange)
		}
		ext = append(ext, extent{lba, n})
	}
	start := time.Now()
	for _, e := range ext {
		if e.n == 0 {
			continue
		}
		if err := c.unit.store.punch(int64(e.lba)<<blockShift, int64(e.n)<<blockShift); err != nil {
			return c.fail(senseMediumError, ascWriteError)
		}
	}
	c.unit.store.metrics.observeUnmap(time.Since(start))
	return c.good(nil, nil)
}

// handleServiceActionIn serves READ CAPACITY(16) with the thin-provisioning
// bits gotgt leaves out and GET LBA STATUS from the file's holes; other
// service actions go to gotgt.
func handleServiceActionIn(host int, cmd *api.SCSICommand) api.SAMStat {
	c := contextOf(cmd)
	cdb := cmd.SCB
	if len(cdb) < 16 {
		return c.fail(senseIllegalRequest, ascInvalidFieldInCDB)
	}
	alloc := int(binary.BigEndian.Uint32(cdb[10:]))
	switch cdb[1] & 0x1f {
	case saReadCapacity16:
		b := make([]byte, 32)
		binary.BigEndian.PutUint64(b, c.blocks()-1)
		binary.BigEndian.PutUint32(b[8:], blockSize)
		b[13] = byte(c.unit.lu.Attrs.Lbppbe)
		b[14] = 0x80 | 0x40 // LBPME, LBPRZ: unmapped blocks read as zeros
		return c.good(b[:min(alloc, len(b))], nil)
	case saGetLBAStatus:
		lba := binary.BigEndian.Uint64(cdb[2:])
		if lba >= c.blocks() {
			return c.fail(senseIllegalRequest, ascLBAOutOfRange)
		}
		b := make([]byte, 24)
		mapped, end, err := c.unit.store.extentAt(int64(lba)<<blockShift, int64(c.unit.lu.Size))
		if err != nil {
			return c.fail(senseMediumError, ascReadError)
		}
		endLBA := uint64(end) >> blockShift
		if end%blockSize != 0 {
			endLBA++
		}
		if endLBA <= lba {
			endLBA = lba + 1
		}
		binary.BigEndian.PutUint32(b, 20)
		binary.BigEndian.PutUint64(b[8:], lba)
		binary.BigEndian.PutUint32(b[16:], uint32(min(endLBA-lba, 0xffffffff)))
		if !mapped {
			b[20] = 1
		}
		return c.good(b[:min(alloc, len(b))], nil)
	}
	return scsi.SBCServiceAction(host, cmd)
}

func (u *logicalUnit) size() uint64 {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return u.lu.Size
}
