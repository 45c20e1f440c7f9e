package iscsi

import (
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// BenchmarkPDUPath measures the session layer's own path for small
// commands over loopback, with a hand-made initiator (no qemu): PDU
// parsing, Data-Out collection and response queueing. It is steadier than
// BenchmarkThroughput on a busy machine; compare runs with benchstat.
func BenchmarkPDUPath(b *testing.B) {
	e, _ := startEngine(b)
	ex := exportVolume(b, e, "pdupath", 64<<20, testInitiator)
	block := make([]byte, 4096)
	for _, bc := range []struct {
		name  string
		depth int
		cmd   func(tag uint32) []byte
		r2t   bool // the write's data goes in a Data-Out after the R2T
	}{
		{"1M read qd16", 16, func(tag uint32) []byte {
			return scsiCmd(tag, tag, rw10(0x28, tag%32*2048, 2048), 1<<20, true, false, nil)
		}, false},
		{"4K read qd16", 16, func(tag uint32) []byte {
			return scsiCmd(tag, tag, rw10(0x28, tag%1024*8, 8), 4096, true, false, nil)
		}, false},
		{"4K write immediate qd16", 16, func(tag uint32) []byte {
			return scsiCmd(tag, tag, rw10(0x2a, tag%1024*8, 8), 4096, false, true, block)
		}, false},
		{"4K write by R2T qd1", 1, func(tag uint32) []byte {
			return scsiCmd(tag, tag, rw10(0x2a, tag%1024*8, 8), 4096, false, true, nil)
		}, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			nc := benchLogin(b, e, ex)
			defer nc.Close()
			r := &benchReader{nc: nc}
			b.SetBytes(4096)
			if strings.HasPrefix(bc.name, "1M") {
				b.SetBytes(1 << 20)
			}
			b.ReportAllocs()
			b.ResetTimer()
			tag := uint32(1)
			for done := 0; done < b.N; {
				n := min(bc.depth, b.N-done)
				var out []byte
				for i := 0; i < n; i++ {
					out = append(out, bc.cmd(tag+uint32(i))...)
				}
				if _, err := nc.Write(out); err != nil {
					b.Fatal(err)
				}
				for answered := 0; answered < n; {
					h := r.next(b)
					switch h[0] & 0x3f {
					case opR2T:
						var d [bhsLen]byte
						d[0], d[1] = opDataOut, flagFinal
						copy(d[8:24], h[8:24])
						if _, err := nc.Write(rawPDU(&d, block)); err != nil {
							b.Fatal(err)
						}
					case opDataIn:
						if h[1]&0x01 != 0 {
							answered++
						}
					case opSCSIResp:
						answered++
					}
				}
				tag += uint32(n)
				done += n
			}
		})
	}
}

func benchLogin(b *testing.B, e *Engine, ex Export) net.Conn {
	b.Helper()
	nc, err := net.Dial("tcp", portal(e))
	if err != nil {
		b.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(time.Minute))
	var h [bhsLen]byte
	h[0], h[1] = flagImmedate|opLoginReq, 0x80|3
	copy(h[8:14], []byte{0x80, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint32(h[24:], 1)
	text := marshalText([]kv{{"InitiatorName", testInitiator}, {"TargetName", ex.IQN}, {"AuthMethod", "None"},
		{"MaxRecvDataSegmentLength", "262144"}, {"InitialR2T", "No"}, {"ImmediateData", "Yes"}})
	if _, err := nc.Write(rawPDU(&h, text)); err != nil {
		b.Fatal(err)
	}
	r := &benchReader{nc: nc}
	if resp := r.next(b); resp[36] != 0 {
		b.Fatalf("login: status %#x%02x", resp[36], resp[37])
	}
	return nc
}

// benchReader reads target PDUs, dropping their data.
type benchReader struct {
	nc  net.Conn
	buf []byte
}

func (r *benchReader) next(b *testing.B) [bhsLen]byte {
	var h [bhsLen]byte
	if _, err := io.ReadFull(r.nc, h[:]); err != nil {
		b.Fatal(err)
	}
	n := (int(h[5])<<16 | int(h[6])<<8 | int(h[7]) + 3) &^ 3
	if cap(r.buf) < n {
		r.buf = make([]byte, n)
	}
	if _, err := io.ReadFull(r.nc, r.buf[:n]); err != nil {
		b.Fatal(err)
	}
	return h
}
