package iscsi

import (
	"encoding/binary"
	"fmt"
	"io"
)

// iSCSI opcodes (RFC 7143 11.1.1).
const (
	opNopOut     = 0x00
	opSCSICmd    = 0x01
	opTMFReq     = 0x02
	opLoginReq   = 0x03
	opTextReq    = 0x04
	opDataOut    = 0x05
	opLogoutReq  = 0x06
	opSNACKReq   = 0x10
	opNopIn      = 0x20
	opSCSIResp   = 0x21
	opTMFResp    = 0x22
	opLoginResp  = 0x23
	opTextResp   = 0x24
	opDataIn     = 0x25
	opLogoutResp = 0x26
	opR2T        = 0x31
	opReject     = 0x3f
)

const (
	bhsLen       = 48
	reservedTag  = 0xffffffff
	flagFinal    = 0x80
	flagImmedate = 0x40
)

// pdu is one iSCSI protocol data unit: the basic header segment, and the data
// segment without padding. Additional header segments are read and dropped.
type pdu struct {
	bhs  [bhsLen]byte
	data []byte
}

func (p *pdu) opcode() byte       { return p.bhs[0] & 0x3f }
func (p *pdu) itt() uint32        { return p.u32(16) }
func (p *pdu) u32(off int) uint32 { return binary.BigEndian.Uint32(p.bhs[off:]) }
func (p *pdu) u16(off int) uint16 { return binary.BigEndian.Uint16(p.bhs[off:]) }
func (p *pdu) put32(off int, v uint32) {
	binary.BigEndian.PutUint32(p.bhs[off:], v)
}
func (p *pdu) put16(off int, v uint16) {
	binary.BigEndian.PutUint16(p.bhs[off:], v)
}

// cmdSN and expStatSN sit at the same offsets in every initiator PDU that has them.
func (p *pdu) cmdSN() uint32 { return p.u32(24) }

// errSegmentTooLong is a PDU announcing a data segment longer than the
// receiver may take at that point of the protocol; its payload is not read.
type errSegmentTooLong struct{ n, limit int }

func (e *errSegmentTooLong) Error() string {
	return fmt.Sprintf("data segment of %d bytes is longer than the %d allowed", e.n, e.limit)
}

// dataSegLen is the data segment length a BHS announces.
func dataSegLen(h *[bhsLen]byte) int { return int(h[5])<<16 | int(h[6])<<8 | int(h[7]) }

// readPDU reads one PDU whose data segment may be at most limit bytes. A
// longer announcement is an *errSegmentTooLong, returned before any of the
// payload is read or allocated. It reads into p.data when it is big enough,
// so the caller may reuse the buffer.
func readPDU(r io.Reader, p *pdu, limit int) error {
	if _, err := io.ReadFull(r, p.bhs[:]); err != nil {
		return err
	}
	ahs := int(p.bhs[4]) * 4
	n := dataSegLen(&p.bhs)
	if n > limit {
		return &errSegmentTooLong{n: n, limit: limit}
	}
	if ahs > 0 {
		if _, err := io.CopyN(io.Discard, r, int64(ahs)); err != nil {
			return err
		}
	}
	padded := (n + 3) &^ 3
	if cap(p.data) >= padded {
		p.data = p.data[:padded]
	} else {
		p.data = make([]byte, padded)
	}
	if _, err := io.ReadFull(r, p.data); err != nil {
		return err
	}
	p.data = p.data[:n]
	return nil
}

// header writes the BHS of a target PDU with the data segment length set.
func (p *pdu) setDataLen(n int) {
	p.bhs[4] = 0
	p.bhs[5] = byte(n >> 16)
	p.bhs[6] = byte(n >> 8)
	p.bhs[7] = byte(n)
}

var zeroPad [4]byte

// writeTo writes the PDU with data as its data segment (padded to 4 bytes).
func writePDU(w io.Writer, bhs *[bhsLen]byte, data []byte) error {
	if _, err := w.Write(bhs[:]); err != nil {
		return err
	}
	if len(data) == 0 {
		return nil
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	if pad := (4 - len(data)%4) % 4; pad > 0 {
		if _, err := w.Write(zeroPad[:pad]); err != nil {
			return err
		}
	}
	return nil
}

// decodeLUN turns the 8-byte SAM LUN structure into a number (peripheral and
// flat addressing); other address methods map to a LUN nobody exports.
func decodeLUN(raw uint64) uint64 {
	b0 := byte(raw >> 56)
	b1 := byte(raw >> 48)
	switch b0 >> 6 {
	case 0, 1:
		return uint64(b0&0x3f)<<8 | uint64(b1)
	}
	return 1 << 62
}

// sn32Less reports whether a < b in serial number arithmetic (RFC 1982).
func sn32Less(a, b uint32) bool { return a != b && int32(a-b) < 0 }
