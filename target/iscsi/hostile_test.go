package iscsi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The hostile-client probes of issue 11: clients that need no credentials
// try to make the target hold memory or connections. Each probe runs
// against an engine in this process, bounded in connections, bytes and
// time, while the test samples the process's RSS; during each one, a
// legitimate initiator logs in and sends an INQUIRY.
const (
	hostileGrowthMax   = 64 << 20    // RSS growth allowed during a probe
	hostileLoginMax    = time.Second // a legitimate login + INQUIRY during a probe
	hostileProbeBudget = 20 * time.Second
)

// rssBytes is the process's resident set size (VmRSS).
func rssBytes(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// heapObjects is the bytes of live and not yet swept heap objects.
func heapObjects() int64 {
	s := []rtmetrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	rtmetrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// memWatch samples RSS from the moment it starts until stop; the baseline
// is taken after a GC that also returns freed memory to the system, so that
// what earlier tests left behind does not count against the probe.
type memWatch struct {
	base, baseHeap int64
	peak           int64
	done           chan struct{}
	stopped        chan struct{}
}

func watchMemory(t testing.TB) *memWatch {
	t.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	w := &memWatch{base: rssBytes(t), baseHeap: heapObjects(), done: make(chan struct{}), stopped: make(chan struct{})}
	w.peak = w.base
	go func() {
		defer close(w.stopped)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
				w.peak = max(w.peak, rssBytes(t))
			}
		}
	}()
	return w
}

// stop ends the sampling and checks the growth: the peak RSS during the
// probe, and the heap after a GC once the probe is over (memory kept).
func (w *memWatch) stop(t testing.TB, probe string) {
	t.Helper()
	close(w.done)
	<-w.stopped
	runtime.GC()
	after, heap := rssBytes(t), heapObjects()
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	t.Logf("%s: RSS %s → peak %s, %s after; heap kept %s", probe, mib(w.base), mib(w.peak), mib(after), mib(heap-w.baseHeap))
	if g := w.peak - w.base; g > hostileGrowthMax {
		t.Errorf("%s: RSS grew by %s, want at most %s", probe, mib(g), mib(hostileGrowthMax))
	}
	if g := heap - w.baseHeap; g > hostileGrowthMax {
		t.Errorf("%s: %s of heap kept after the probe, want at most %s", probe, mib(g), mib(hostileGrowthMax))
	}
}

// inquire logs in as a legitimate initiator, sends an INQUIRY and waits for
// its answer; it returns how long that took.
func inquire(t *testing.T, e *Engine, ex Export) time.Duration {
	t.Helper()
	start := time.Now()
	c := rawLogin(t, e, ex, testInitiator)
	defer c.nc.Close()
	if _, err := c.nc.Write(scsiCmd(1, 1, []byte{0x12, 0, 0, 0, 96, 0}, 96, true, false, nil)); err != nil {
		t.Fatalf("send INQUIRY: %v", err)
	}
	for {
		h, data := c.read()
		switch h[0] & 0x3f {
		case opDataIn:
			if h[1]&0x01 == 0 {
				continue
			}
			if h[3] != 0 || len(data) < 36 {
				t.Fatalf("INQUIRY: got status %#x and %d bytes, want GOOD and 96", h[3], len(data))
			}
		case opSCSIResp:
			t.Fatalf("INQUIRY: got a SCSI Response with status %#x, want data", h[3])
		default:
			continue
		}
		return time.Since(start)
	}
}

// probe runs attack (which should return once it has done its damage or
// ctx-like stop is closed) while watching memory, and logs in legitimately
// once the attack has started.
func probe(t *testing.T, name string, attack func(addr string, stop <-chan struct{}, started func())) {
	t.Helper()
	e, _ := startEngine(t)
	ex := exportVolume(t, e, "hostile", 16<<20, testInitiator)
	inquire(t, e, ex) // warm up: the first login pays for lazy set-up

	w := watchMemory(t)
	stop := make(chan struct{})
	started := make(chan struct{})
	var once sync.Once
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		attack(portal(e), stop, func() { once.Do(func() { close(started) }) })
	}()
	select {
	case <-started:
	case <-finished:
	case <-time.After(hostileProbeBudget):
		t.Error("the attack did not get going")
	}
	if d := inquire(t, e, ex); d > hostileLoginMax {
		t.Errorf("%s: a legitimate login and INQUIRY took %s, want at most %s", name, d, hostileLoginMax)
	} else {
		t.Logf("%s: legitimate login and INQUIRY answered in %s", name, d.Round(100*time.Microsecond))
	}
	select {
	case <-finished:
	case <-time.After(hostileProbeBudget):
		t.Errorf("%s: the attack still runs after %s", name, hostileProbeBudget)
	}
	close(stop)
	<-finished
	w.stop(t, name)
}

// dialProbe opens the i-th connection of an attack. Attacks come from 20
// loopback addresses other than the legitimate initiator's 127.0.0.1 (and
// other than the lab's 127.0.0.2 and .3), as a hostile client on the
// storage network would: an initiator's own address at its pending-login
// bound has its new logins refused.
func dialProbe(addr string, i int) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(20+i%20))}}
	return d.Dial("tcp", addr)
}

// loginHeader is a Login Request BHS announcing dlen bytes of data.
func loginHeader(dlen int, cont bool) []byte {
	var h [bhsLen]byte
	h[0] = flagImmedate | opLoginReq
	h[1] = 0x80 | 1 // transit to operational negotiation
	if cont {
		h[1] = 0x40 // C bit, no transit
	}
	copy(h[8:14], []byte{0x80, 0, 0, 0, 0, 9})
	binary.BigEndian.PutUint32(h[24:], 1)
	h[5], h[6], h[7] = byte(dlen>>16), byte(dlen>>8), byte(dlen)
	return h[:]
}

// sendUntilRefused writes n bytes to c, from chunk over and over, and
// reports how many went out before the target ended the connection.
func sendUntilRefused(c net.Conn, chunk []byte, n int) int {
	sent := 0
	c.SetWriteDeadline(time.Now().Add(hostileProbeBudget))
	for sent < n {
		m, err := c.Write(chunk[:min(len(chunk), n-sent)])
		sent += m
		if err != nil {
			break
		}
	}
	return sent
}

// randomChunk is size bytes from a fixed seed: the probes are repeatable.
func randomChunk(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, size)
	for i := 0; i+8 <= size; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	return b
}

func TestRandomBytesFromManyConnectionsLeaveNoMemoryBehind(t *testing.T) {
	const conns, parallel = 200, 20
	noise := randomChunk(1, 1<<20)
	probe(t, "200 connections of random bytes", randomBytesAttack(conns, parallel, noise))
}

func TestLoginHeadersAnnouncingHugeSegmentsAreRefusedUnread(t *testing.T) {
	const conns = 32
	chunk := make([]byte, 1<<20)
	probe(t, "32 login headers announcing 16 MiB", hugeSegmentsAttack(conns, chunk))
}

func TestLoginTextInHugeContinuationsIsRefused(t *testing.T) {
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = 'k'
	}
	probe(t, "login text in 16 MiB continuations", hugeContinuationsAttack(chunk))
}

func TestOneLoginPDUWithThousandsOfKeysIsRefused(t *testing.T) {
	var kvs []kv
	kvs = append(kvs, kv{"InitiatorName", testInitiator}, kv{"TargetName", "iqn.2026-11.io.drover:hostile"}, kv{"AuthMethod", "None"})
	for i := 0; i < 5000; i++ {
		kvs = append(kvs, kv{fmt.Sprintf("X-probe-%05d-padding", i), "value"})
	}
	text := marshalText(kvs)
	var answer struct {
		bytes  int
		status uint16
		got    bool
	}
	probe(t, fmt.Sprintf("one %d KB login PDU with 5000 keys", len(text)/1000), func(addr string, stop <-chan struct{}, started func()) {
		c, err := dialProbe(addr, 0)
		if err != nil {
			return
		}
		defer c.Close()
		started()
		h := loginHeader(len(text), false)
		pdu := append(append(h, text...), make([]byte, (4-len(text)%4)%4)...)
		c.SetDeadline(time.Now().Add(hostileProbeBudget))
		if _, err := c.Write(pdu); err != nil {
			return
		}
		r := bufio.NewReader(c)
		var rh [bhsLen]byte
		if _, err := io.ReadFull(r, rh[:]); err != nil {
			return // the connection was reset
		}
		answer.got, answer.status = true, binary.BigEndian.Uint16(rh[36:])
		answer.bytes = dataSegLen(&rh)
	})
	if answer.got && answer.status == 0 {
		t.Errorf("a %d-byte login PDU was accepted and answered with %d bytes; want a reject (the login limit is 8192)", len(text), answer.bytes)
	}
}

func TestFiveHundredIdleConnectionsAreNotAllHeld(t *testing.T) {
	const conns = 500
	var held []net.Conn
	var mu sync.Mutex
	probe(t, "500 idle connections", func(addr string, stop <-chan struct{}, started func()) {
		var wg sync.WaitGroup
		for i := 0; i < conns; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dialProbe(addr, i)
				if err != nil {
					return
				}
				mu.Lock()
				held = append(held, c)
				mu.Unlock()
			}()
		}
		wg.Wait()
		started()
	})
	// How many of them the target still holds: a read that does not time
	// out has seen the target close the connection.
	open := 0
	var wg sync.WaitGroup
	for _, c := range held {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				mu.Lock()
				open++
				mu.Unlock()
			}
			c.Close()
		}()
	}
	wg.Wait()
	t.Logf("500 idle connections: %d held by the target", open)
	if open > DefaultMaxPendingLogins {
		t.Errorf("the target holds %d connections that never logged in, want at most %d", open, DefaultMaxPendingLogins)
	}
}

// randomBytesAttack: conns connections, parallel at a time, each sending a
// random header and then noise until the target ends it.
func randomBytesAttack(conns, parallel int, noise []byte) func(addr string, stop <-chan struct{}, started func()) {
	return func(addr string, stop <-chan struct{}, started func()) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, parallel)
		for i := 0; i < conns; i++ {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := dialProbe(addr, i)
				if err != nil {
					return
				}
				defer c.Close()
				// Each connection starts with its own random header; the
				// rest is shared noise.
				c.Write(randomChunk(uint64(i)+2, bhsLen))
				sendUntilRefused(c, noise, len(noise))
			}()
			if i == parallel {
				started()
			}
		}
		wg.Wait()
	}
}

// hugeSegmentsAttack: conns login headers announcing 16 MiB, each followed
// by most of it.
func hugeSegmentsAttack(conns int, chunk []byte) func(addr string, stop <-chan struct{}, started func()) {
	return func(addr string, stop <-chan struct{}, started func()) {
		var wg sync.WaitGroup
		for i := 0; i < conns; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := dialProbe(addr, i)
				if err != nil {
					return
				}
				defer c.Close()
				if _, err := c.Write(loginHeader(1<<24-1, false)); err != nil {
					return
				}
				sendUntilRefused(c, chunk, 15<<20) // most of the 16 MiB
			}()
		}
		started()
		wg.Wait()
	}
}

// hugeContinuationsAttack: login text in continuation PDUs of 16 MiB.
func hugeContinuationsAttack(chunk []byte) func(addr string, stop <-chan struct{}, started func()) {
	return func(addr string, stop <-chan struct{}, started func()) {
		c, err := dialProbe(addr, 0)
		if err != nil {
			return
		}
		defer c.Close()
		go io.Copy(io.Discard, c) // the target's answers, if any
		started()
		// At most 16 PDUs of 16 MiB (256 MiB), or until the target ends it.
		for pdu := 0; pdu < 16; pdu++ {
			select {
			case <-stop:
				return
			default:
			}
			const dlen = 1<<24 - 4 // the longest a PDU can announce, padded
			if _, err := c.Write(loginHeader(dlen, true)); err != nil {
				return
			}
			if sendUntilRefused(c, chunk, dlen) < dlen {
				return
			}
		}
	}
}
