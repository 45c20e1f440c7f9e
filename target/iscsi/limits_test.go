package iscsi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// startLimitedEngine starts an engine with the given pending-login bounds.
func startLimitedEngine(t *testing.T, cfg Config) (*Engine, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Listen, cfg.Logger, cfg.Registerer = "127.0.0.1:0", testLogger(t), reg
	e, err := New(cfg)
	if err != nil {
		t.Fatalf("New: got error %v, want nil", err)
	}
	t.Cleanup(func() { e.Close() })
	return e, reg
}

// refusedCount reads drover_iscsi_connections_refused_total{reason}.
func refusedCount(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "drover_iscsi_connections_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no drover_iscsi_connections_refused_total{reason=%q}", reason)
	return 0
}

// waitRefused waits until the refusal counter of reason reaches want.
func waitRefused(t *testing.T, reg *prometheus.Registry, reason string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := refusedCount(t, reg, reason)
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("refused{reason=%q}: got %v, want %v", reason, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// closedByTarget reports whether the target closes c within wait; what it
// sends before that is read and dropped.
func closedByTarget(c net.Conn, wait time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(wait))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func dialFrom(t *testing.T, e *Engine, src string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", portal(e))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// loginReq is a Login Request PDU: flags byte 1 (T, C, CSG, NSG) and text.
func loginReq(flags byte, text []byte) []byte {
	var h [bhsLen]byte
	h[0] = flagImmedate | opLoginReq
	h[1] = flags
	copy(h[8:14], []byte{0x80, 0, 0, 0, 0, 7})
	binary.BigEndian.PutUint32(h[24:], 1)
	return rawPDU(&h, text)
}

func TestAnAddressAtItsPendingLoginBoundHasNewConnectionsRefused(t *testing.T) {
	t.Parallel()
	e, reg := startLimitedEngine(t, Config{MaxPendingLoginsPerAddr: 2})
	ex := exportVolume(t, e, "bound", 1<<20, testInitiator)
	a, b := dialFrom(t, e, "127.0.0.60"), dialFrom(t, e, "127.0.0.60")
	third := dialFrom(t, e, "127.0.0.60")
	if !closedByTarget(third, 2*time.Second) {
		t.Error("a third pending connection from one address was held, want it closed")
	}
	waitRefused(t, reg, refusedPendingLoginsPerAddr, 1)
	if closedByTarget(a, 50*time.Millisecond) || closedByTarget(b, 50*time.Millisecond) {
		t.Error("the first two pending connections were closed, want them held")
	}
	rawLogin(t, e, ex, testInitiator) // another address logs in
}

func TestAtThePendingLoginBoundTheOldestMakesRoom(t *testing.T) {
	t.Parallel()
	e, reg := startLimitedEngine(t, Config{MaxPendingLogins: 3})
	ex := exportVolume(t, e, "room", 1<<20, testInitiator)
	var idle []net.Conn
	for i := 0; i < 3; i++ {
		idle = append(idle, dialFrom(t, e, fmt.Sprintf("127.0.0.%d", 61+i)))
		time.Sleep(20 * time.Millisecond) // an order of age
	}
	rawLogin(t, e, ex, testInitiator)
	if !closedByTarget(idle[0], 2*time.Second) {
		t.Error("the oldest pending connection was held, want it closed to make room")
	}
	if closedByTarget(idle[2], 50*time.Millisecond) {
		t.Error("the youngest pending connection was closed, want it held")
	}
	waitRefused(t, reg, refusedPendingLogins, 1)
}

func TestALoginNotFinishedInTimeIsClosed(t *testing.T) {
	t.Parallel()
	e, reg := startLimitedEngine(t, Config{LoginTimeout: 200 * time.Millisecond})
	c := dialFrom(t, e, "127.0.0.64")
	c.Write(loginReq(0x40, []byte("InitiatorName=iqn.2026-11.io.drover.test:slow\x00"))) // a continuation, then nothing
	start := time.Now()
	if !closedByTarget(c, 3*time.Second) {
		t.Fatal("an idle login was held for 3 s, want it closed after 200ms")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the idle login was closed after %s, want about 200ms", d)
	}
	waitRefused(t, reg, refusedLoginTimeout, 1)
}

func TestNegativeLoginBoundsAreRefused(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{{LoginTimeout: -time.Second}, {MaxPendingLogins: -1}, {MaxPendingLoginsPerAddr: -1}} {
		cfg.Listen = "127.0.0.1:0"
		if e, err := New(cfg); err == nil {
			e.Close()
			t.Errorf("New(%+v): got nil error, want one", cfg)
		}
	}
}

// readLoginResp reads one Login Response: its flags, status and text.
func readLoginResp(t *testing.T, c net.Conn) (flags byte, status uint16, text []byte) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var h [bhsLen]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		t.Fatalf("read login response: %v", err)
	}
	if h[0]&0x3f != opLoginResp {
		t.Fatalf("got opcode %#x, want a Login Response", h[0]&0x3f)
	}
	n := dataSegLen(&h)
	data := make([]byte, (n+3)&^3)
	if _, err := io.ReadFull(c, data); err != nil {
		t.Fatalf("read login response text: %v", err)
	}
	return h[1], binary.BigEndian.Uint16(h[36:]), data[:n]
}

func TestALongLoginResponseIsSplitWithTheContinueBit(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		declared int // the initiator's MaxRecvDataSegmentLength, 0 for none
		want     int // the longest piece allowed
	}{
		{"at most 8192 bytes a piece during login", 0, loginSegMax},
		{"at most what the initiator declared", 512, 512},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, _ := startEngine(t)
			ex := exportVolume(t, e, "split", 1<<20, testInitiator)
			kvs := []kv{{"InitiatorName", testInitiator}, {"TargetName", ex.IQN}, {"AuthMethod", "None"}}
			if tt.declared > 0 {
				kvs = append(kvs, kv{"MaxRecvDataSegmentLength", fmt.Sprint(tt.declared)})
			}
			for i := 0; i < 600; i++ {
				kvs = append(kvs, kv{fmt.Sprintf("X-k%04d", i), "1"}) // each answered NotUnderstood
			}
			req := marshalText(kvs)
			if len(req) > loginSegMax {
				t.Fatalf("request of %d bytes, want at most %d", len(req), loginSegMax)
			}
			c := dialFrom(t, e, "127.0.0.1")
			c.Write(loginReq(0x80|1, req)) // security → operational
			var text []byte
			for pieces := 1; ; pieces++ {
				flags, status, piece := readLoginResp(t, c)
				if status != 0 {
					t.Fatalf("piece %d: got status %#04x, want 0", pieces, status)
				}
				if len(piece) > tt.want {
					t.Errorf("piece %d: got %d bytes, want at most %d", pieces, len(piece), tt.want)
				}
				text = append(text, piece...)
				if flags&0x40 == 0 {
					if flags&0x80 == 0 || pieces < 2 {
						t.Errorf("last piece %d: got flags %#x, want the transit bit after several pieces", pieces, flags)
					}
					break
				}
				if flags&0x80 != 0 {
					t.Fatalf("piece %d: got C and T bits together", pieces)
				}
				c.Write(loginReq(0, nil)) // an empty request in the same stage asks for the rest
			}
			if got := strings.Count(string(text), "=NotUnderstood\x00"); got != 600 {
				t.Errorf("got %d NotUnderstood answers across the pieces, want 600", got)
			}
		})
	}
}

func TestLoginTextAcrossContinuationsIsCapped(t *testing.T) {
	t.Parallel()
	e, reg := startEngine(t)
	c := dialFrom(t, e, "127.0.0.65")
	piece := bytes.Repeat([]byte("X-pad=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\x00"), loginSegMax/64)
	sent := 0
	for {
		c.Write(loginReq(0x40, piece))
		sent += len(piece)
		_, status, _ := readLoginResp(t, c)
		if status != 0 {
			if status != loginOutOfResources {
				t.Errorf("got status %#04x, want %#04x (out of resources)", status, loginOutOfResources)
			}
			break
		}
		if sent > 2*loginTextMax {
			t.Fatalf("%d bytes of continued login text were taken, want a refusal past %d", sent, loginTextMax)
		}
	}
	if sent > loginTextMax+len(piece) {
		t.Errorf("refused after %d bytes, want at %d", sent, loginTextMax)
	}
	if !closedByTarget(c, 2*time.Second) {
		t.Error("the connection stayed open after the refusal")
	}
	waitRefused(t, reg, refusedLoginTextTooLong, 1)
}

func TestALoginPDULongerThan8KiBIsRejectedUnread(t *testing.T) {
	t.Parallel()
	e, reg := startEngine(t)
	c := dialFrom(t, e, "127.0.0.66")
	var h [bhsLen]byte
	copy(h[:], loginReq(0x80|1, nil))
	h[5], h[6], h[7] = 0, 0x20, 0x04 // 8196 bytes announced, none sent
	c.Write(h[:])
	flags, status, _ := readLoginResp(t, c)
	if status != loginInitiatorError || flags&0x80 != 0 {
		t.Errorf("got status %#04x and flags %#x, want %#04x (initiator error) without transit", status, flags, loginInitiatorError)
	}
	if !closedByTarget(c, 2*time.Second) {
		t.Error("the connection stayed open after the reject")
	}
	waitRefused(t, reg, refusedSegmentTooLong, 1)
}

func TestAPDULongerThanWeDeclaredIsRejectedAndEndsTheSession(t *testing.T) {
	t.Parallel()
	e, reg := startEngine(t)
	ex := exportVolume(t, e, "toolong", 1<<20, testInitiator)
	c := rawLogin(t, e, ex, testInitiator)
	var h [bhsLen]byte
	h[0] = flagImmedate | opNopOut
	h[1] = 0x80
	binary.BigEndian.PutUint32(h[16:], 5)
	binary.BigEndian.PutUint32(h[20:], reservedTag)
	n := ourMaxRecvDataSegLen + 4
	h[5], h[6], h[7] = byte(n>>16), byte(n>>8), byte(n)
	c.nc.Write(h[:])
	r, data := c.read()
	if r[0]&0x3f != opReject || r[2] != rejectProtocolError {
		t.Errorf("got opcode %#x reason %#x, want a Reject for a protocol error", r[0]&0x3f, r[2])
	}
	if !bytes.Equal(data, h[:]) {
		t.Error("the Reject does not carry the offending header")
	}
	if !closedByTarget(c.nc, 2*time.Second) {
		t.Error("the session stayed open after the reject")
	}
	waitRefused(t, reg, refusedSegmentTooLong, 1)
}

func TestCloseDoesNotWaitForPendingLogins(t *testing.T) {
	t.Parallel()
	e, _ := startLimitedEngine(t, Config{LoginTimeout: time.Minute})
	c := dialFrom(t, e, "127.0.0.67")
	time.Sleep(50 * time.Millisecond) // accepted and pending
	start := time.Now()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %s with a login pending, want it at once", d)
	}
	if !closedByTarget(c, 2*time.Second) {
		t.Error("the pending connection stayed open after Close")
	}
}

func TestALongSendTargetsAnswerIsSplitWithTheContinueBit(t *testing.T) {
	t.Parallel()
	e, _ := startEngine(t)
	const volumes = 20
	for i := 0; i < volumes; i++ {
		exportVolume(t, e, fmt.Sprintf("discover-%02d", i), 1<<20, testInitiator)
	}
	c := dialFrom(t, e, "127.0.0.1")
	c.Write(loginReq(0x80|3, marshalText([]kv{{"InitiatorName", testInitiator}, {"SessionType", "Discovery"},
		{"AuthMethod", "None"}, {"MaxRecvDataSegmentLength", "512"}})))
	if flags, status, _ := readLoginResp(t, c); status != 0 || flags&0x83 != 0x83 {
		t.Fatalf("discovery login: got status %#04x flags %#x, want a transit to full feature", status, flags)
	}
	ttt := uint32(reservedTag)
	var text []byte
	for pieces := 1; pieces < 100; pieces++ {
		var h [bhsLen]byte
		h[0], h[1] = flagImmedate|opTextReq, 0x80
		binary.BigEndian.PutUint32(h[16:], uint32(pieces))
		binary.BigEndian.PutUint32(h[20:], ttt)
		binary.BigEndian.PutUint32(h[24:], 1)
		var data []byte
		if pieces == 1 {
			data = []byte("SendTargets=All\x00")
		}
		c.Write(rawPDU(&h, data))
		var r [bhsLen]byte
		if _, err := io.ReadFull(c, r[:]); err != nil {
			t.Fatal(err)
		}
		n := dataSegLen(&r)
		piece := make([]byte, (n+3)&^3)
		if _, err := io.ReadFull(c, piece); err != nil {
			t.Fatal(err)
		}
		if r[0]&0x3f != opTextResp || n > 512 {
			t.Fatalf("piece %d: got opcode %#x with %d bytes, want a Text Response of at most 512", pieces, r[0]&0x3f, n)
		}
		text = append(text, piece[:n]...)
		if r[1]&0x40 == 0 {
			if r[1]&0x80 == 0 || pieces < 2 {
				t.Errorf("last piece %d: got flags %#x, want final after several pieces", pieces, r[1])
			}
			break
		}
		ttt = binary.BigEndian.Uint32(r[20:])
	}
	if got := strings.Count(string(text), "TargetName="); got != volumes {
		t.Errorf("got %d targets across the pieces, want %d", got, volumes)
	}
}
