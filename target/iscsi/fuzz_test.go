package iscsi

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// Fuzz targets for what parses bytes from initiators that have not logged
// in. Their seeds run in every go test; go test -fuzz FuzzLogin explores.

func FuzzReadPDU(f *testing.F) {
	f.Add(loginReq(0x80|1, marshalText([]kv{{"InitiatorName", testInitiator}, {"AuthMethod", "None"}})), 8192)
	f.Add(loginHeader(1<<24-1, false), 8192)
	f.Add(append(loginHeader(5, false), 'a', 'b', 'c', 'd', 'e', 0, 0, 0), 4)
	withAHS := loginReq(0, []byte("k=v\x00"))
	withAHS[4] = 1 // one word of additional header, not present
	f.Add(withAHS, 8192)
	f.Add([]byte{}, 0)
	f.Fuzz(func(t *testing.T, b []byte, limit int) {
		limit = max(0, min(limit, 1<<24))
		r := bytes.NewReader(b)
		var p pdu
		err := readPDU(r, &p, limit)
		if err != nil {
			return
		}
		n := dataSegLen(&p.bhs)
		if len(p.data) != n || n > limit {
			t.Fatalf("got %d bytes of data for %d announced, limit %d", len(p.data), n, limit)
		}
		if used := len(b) - r.Len(); used != bhsLen+int(p.bhs[4])*4+(n+3)&^3 {
			t.Fatalf("read %d bytes for a PDU of %d announced data bytes", used, n)
		}
	})
}

func FuzzParseText(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.x\x00TargetName=iqn.y\x00"))
	f.Add([]byte("a=b=c\x00\x00novalue\x00=\x00"))
	f.Add([]byte("CHAP_C=0x" + string(bytes.Repeat([]byte("ab"), 64)) + "\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		kvs := parseText(b)
		for _, p := range kvs {
			if bytes.IndexByte([]byte(p.k), 0) >= 0 || bytes.IndexByte([]byte(p.v), 0) >= 0 || bytes.IndexByte([]byte(p.k), '=') >= 0 {
				t.Fatalf("pair %q=%q holds a separator", p.k, p.v)
			}
		}
		if again := parseText(marshalText(kvs)); !slices.Equal(again, kvs) {
			t.Fatalf("parse(marshal(parse(b))) = %q, want %q", again, kvs)
		}
	})
}

// FuzzLogin feeds bytes to the login phase as one connection's input: it
// must end without panicking, and every Login Response it writes fits the
// 8 KiB of a login PDU.
func FuzzLogin(f *testing.F) {
	iqn := "iqn.2026-11.io.drover:fuzz"
	normal := marshalText([]kv{{"InitiatorName", testInitiator}, {"TargetName", iqn}, {"AuthMethod", "None"}})
	discovery := marshalText([]kv{{"InitiatorName", testInitiator}, {"SessionType", "Discovery"}, {"AuthMethod", "None"}})
	var many []kv
	many = append(many, kv{"InitiatorName", testInitiator}, kv{"SessionType", "Discovery"})
	for i := 0; i < 500; i++ {
		many = append(many, kv{fmt.Sprintf("X-k%03d", i), "1"})
	}
	f.Add(loginReq(0x80|3, normal))
	f.Add(slices.Concat(loginReq(0x80|1, discovery), loginReq(0x80|1<<2|3, []byte("MaxRecvDataSegmentLength=512\x00HeaderDigest=None\x00"))))
	f.Add(slices.Concat(loginReq(0x40, discovery[:10]), loginReq(0x80|3, discovery[10:])))
	f.Add(slices.Concat(loginReq(0x80|3, marshalText(many)), loginReq(0, nil), loginReq(0, nil)))
	f.Add(loginHeader(1<<24-1, true))
	f.Add(loginReq(0x80|3, []byte("AuthMethod=CHAP\x00CHAP_A=5\x00InitiatorName=x\x00SessionType=Discovery\x00")))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, _ := newMetrics(nil)
		e := &Engine{log: testLogger(t), metrics: m, volumes: map[string]*volume{}, byIQN: map[string]*volume{}, sessions: map[*session]struct{}{}}
		c := &scriptedConn{in: bytes.NewReader(in)}
		l := &login{e: e, nc: c}
		l.run()
		out := c.out.Bytes()
		for len(out) >= bhsLen {
			var h [bhsLen]byte
			copy(h[:], out)
			n := dataSegLen(&h)
			if h[0]&0x3f != opLoginResp || n > loginSegMax {
				t.Fatalf("wrote opcode %#x with %d bytes of data, want a Login Response of at most %d", h[0]&0x3f, n, loginSegMax)
			}
			out = out[min(len(out), bhsLen+(n+3)&^3):]
		}
		if len(out) != 0 {
			t.Fatalf("%d bytes written after the last whole PDU", len(out))
		}
	})
}

// scriptedConn is a connection whose input is fixed and whose output is kept.
type scriptedConn struct {
	in  io.Reader
	out bytes.Buffer
}

func (c *scriptedConn) Read(p []byte) (int, error)  { return c.in.Read(p) }
func (c *scriptedConn) Write(p []byte) (int, error) { return c.out.Write(p) }
func (c *scriptedConn) Close() error                { return nil }
func (c *scriptedConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3260}
}
func (c *scriptedConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}
}
func (c *scriptedConn) SetDeadline(t time.Time) error      { return nil }
func (c *scriptedConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *scriptedConn) SetWriteDeadline(t time.Time) error { return nil }
